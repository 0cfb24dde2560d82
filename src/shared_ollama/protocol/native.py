"""Native (Ollama) request models: validated before anything reaches the engine.

Unknown fields are kept (``extra="allow"``) and forwarded, so newer Ollama fields pass through unchanged. Every
number is bounded (``bounds.py``): the known numeric ``options`` too, though ``options`` is otherwise free-form.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared_ollama.protocol.bounds import (
    MAX_THREADS,
    ContextCount,
    ContextSize,
    Dimensions,
    EngineFloat,
    KeepAlive,
    NonNegativeFloat,
    NumPredict,
    Probability,
    Seed,
    TokenId,
    TopK,
)

JsonDict = dict[str, Any]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    def to_engine(self) -> JsonDict:
        """The body sent to the engine: what the client sent, minus fields left unset."""
        return self.model_dump(exclude_none=True, by_alias=True)


class Options(_Wire):
    """Ollama ``options``: the ones the engine knows are typed and bounded, the rest pass through."""

    temperature: NonNegativeFloat | None = None
    top_p: Probability | None = None
    min_p: Probability | None = None
    typical_p: Probability | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    num_predict: NumPredict | None = None
    num_ctx: ContextSize | None = None
    num_batch: ContextSize | None = None
    num_keep: ContextCount | None = None
    repeat_last_n: ContextCount | None = None
    num_thread: int | None = Field(default=None, ge=0, le=MAX_THREADS)
    mirostat: int | None = Field(default=None, ge=0, le=2)
    mirostat_tau: NonNegativeFloat | None = None
    mirostat_eta: NonNegativeFloat | None = None
    stop: list[str] | None = None
    repeat_penalty: NonNegativeFloat | None = None
    presence_penalty: EngineFloat | None = None
    frequency_penalty: EngineFloat | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class ToolCallFunction(_Wire):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Wire):
    function: ToolCallFunction


class Message(_Wire):
    role: str = Field(min_length=1)
    content: str = ""
    thinking: str | None = None
    """An earlier answer's reasoning (Ollama's ``thinking``), for templates that keep it in the history."""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, value: object) -> object:
        return "" if value is None else value


Think = bool | Literal["low", "medium", "high", "max"]
"""Ollama's ``think``: on or off, or how hard (a string turns thinking on)."""


class _Generation(_Wire):
    model: str = ""
    format: str | JsonDict | None = None
    options: Options | None = None
    stream: bool | None = None
    keep_alive: KeepAlive | None = None
    think: Think | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> _Generation:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | JsonDict | None) -> str | JsonDict | None:
        if isinstance(value, str) and value not in ("", "json"):
            raise ValueError('format must be "json" or a JSON schema object')
        return value or None


class ChatRequest(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[JsonDict] | None = None


class GenerateRequest(_Generation):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool | None = None
    images: list[str] | None = None
    context: list[TokenId] | None = None


class EmbedRequest(_Wire):
    """``/api/embed``: ``input`` is a string or a list of strings."""

    model: str = ""
    input: str | list[str]
    truncate: bool | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None
    dimensions: Dimensions | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        return value


class LegacyEmbeddingsRequest(_Wire):
    """``/api/embeddings``: one ``prompt``."""

    model: str = ""
    prompt: str
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class ShowRequest(_Wire):
    model: str = Field(default="", validation_alias="model")
    name: str | None = None
    verbose: bool | None = None

    def target(self) -> str:
        return self.model or (self.name or "")


class ServiceEmbeddingsRequest(_Wire):
    """``/api/v1/embeddings``: the seed's ``prompt`` or an ``input`` string or list."""

    model: str = ""
    prompt: str | None = None
    input: str | list[str] | None = None
    truncate: bool | None = None
    keep_alive: KeepAlive | None = None

    def texts(self) -> str | list[str]:
        if self.input is not None:
            return self.input
        if self.prompt is not None:
            return self.prompt
        raise ValueError("either 'input' or 'prompt' is required")


class ImageCompression(BaseModel):
    """A vision request's own image settings; unset fields use the service's."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    max_side: int | None = Field(default=None, ge=64, le=8192)
    jpeg_quality: int | None = Field(default=None, ge=30, le=100)


class VisionRequest(ChatRequest):
    """``/api/v1/vlm``: a chat whose top-level ``images`` attach to the last user message."""

    images: list[str] | None = None
    image_compression: ImageCompression | None = None

    def to_engine(self) -> JsonDict:
        body = self.model_dump(exclude_none=True, by_alias=True, exclude={"images", "image_compression"})
        if self.images:
            users = [m for m in body["messages"] if m.get("role") == "user"]
            if not users:
                raise ValueError("images need a user message to attach to")
            users[-1]["images"] = [*users[-1].get("images", []), *self.images]
        return body


class BatchRequest(BaseModel):
    """``/api/v1/batch/chat`` and ``/api/v1/batch/vlm``: items are validated one by one, so one bad item
    becomes one error in its place instead of failing the batch."""

    model_config = ConfigDict(extra="forbid")
    requests: list[JsonDict] = Field(min_length=1)
    concurrency: int | None = Field(default=None, ge=1, le=64)
