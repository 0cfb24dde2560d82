"""What an agent is and what a run asks: the request bodies of ``/api/v1/agents``, validated (unknown fields are a
400 naming them, as everywhere)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared_ollama.protocol.native import Options

JsonDict = dict[str, Any]

AGENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SYSTEM_CHARS = 20_000
MAX_INPUT_MESSAGES = 200
SESSION_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


class AgentDefinition(BaseModel):
    """``POST /api/v1/agents/create`` (with ``name``) and ``PUT /api/v1/agents/{name}`` (without)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=AGENT_NAME)
    model: str = Field(min_length=1, max_length=200)
    system: str | None = Field(default=None, max_length=MAX_SYSTEM_CHARS)
    description: str | None = Field(default=None, max_length=2000)
    tools: list[str] = Field(default_factory=list, max_length=64)
    """Tool names as ``GET /api/v1/agents/tools`` lists them (built-ins, ``<server>__<tool>`` for MCP)."""
    max_steps: int = Field(default=8, ge=1)
    """Model calls that may call tools in one run (checked against ``agent_max_steps_limit`` by the API)."""
    options: JsonDict = Field(default_factory=dict)
    """Native model options for every step (``temperature``, ``num_predict``, ...), under the tenant's policy."""
    tool_choice: Literal["auto", "required"] = "auto"
    """``required``: the run's first step must call a tool (the engine's grammar makes it); ``auto``: the model
    decides."""
    tool_mode: Literal["auto", "native", "grammar"] = "auto"
    """How the model calls tools: ``native`` (the model's own tool template), ``grammar`` (a JSON schema the
    engine's grammar enforces: any model can), ``auto`` (native when the model lists the ``tools`` capability)."""

    @field_validator("options")
    @classmethod
    def _known_options_typed(cls, options: JsonDict) -> JsonDict:
        """The options every step sends, typed and bounded as on the native API (a bad one is a 400 now, not a
        failure of every run later)."""
        return Options.model_validate(options).model_dump(exclude_none=True, by_alias=True)

    @field_validator("tools")
    @classmethod
    def _distinct(cls, tools: list[str]) -> list[str]:
        if len(set(tools)) != len(tools):
            raise ValueError("tools must not repeat a name")
        return tools

    def stored(self) -> JsonDict:
        """The definition as the store keeps it (the name is the store's key)."""
        return self.model_dump(exclude={"name"})


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=200_000)


class RunRequest(BaseModel):
    """``POST /api/v1/agents/{name}/run``: ``input`` or ``messages``, exactly one."""

    model_config = ConfigDict(extra="forbid")

    input: str | None = Field(default=None, min_length=1, max_length=200_000)
    messages: list[InputMessage] | None = Field(default=None, min_length=1, max_length=MAX_INPUT_MESSAGES)
    stream: bool = False
    max_steps: int | None = Field(default=None, ge=1)
    session: str | None = Field(default=None, pattern=SESSION_ID)

    def new_messages(self) -> list[JsonDict]:
        """The run's new turns in native form; a ValueError when neither or both of input and messages are set."""
        if (self.input is None) == (self.messages is None):
            raise ValueError("give exactly one of 'input' (text) or 'messages' (a list of {role, content})")
        if self.input is not None:
            return [{"role": "user", "content": self.input}]
        assert self.messages is not None
        return [m.model_dump() for m in self.messages]
