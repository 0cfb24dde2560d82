"""Anthropic Messages API wire models and the pure conversion of a request to the native chat shape.

A ``/v1/messages`` (or ``/v1/messages/count_tokens``) request becomes a ``Plan``: the native ``/api/chat`` body plus
what the answer's converter (``anthropic_stream.py``) must apply on the way back: a forced tool call to turn into a
``tool_use`` block, the stop sequences to cut at, at most one tool use. Every field Anthropic defines that nothing
here honours is refused with a 400 naming it (``refuse_extras``), never silently ignored. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.bounds import MaxTokens, Probability, TopK

JsonDict = dict[str, Any]

BLOCK_TYPES = ("text", "image", "tool_use", "tool_result")

_NEUTRAL: MappingProxyType[str, tuple[object, ...]] = MappingProxyType(
    {
        "thinking": ({"type": "disabled"},),
        "service_tier": ("standard_only",),
        "speed": ("standard",),
        "strict": (False,),
        "defer_loading": (False,),
        "allowed_callers": (["direct"],),
    }
)
"""Fields nothing here implements, accepted only with the value that asks for nothing."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


def _known_blocks(value: object, known: tuple[str, ...], where: str) -> object:
    """A list of content blocks may hold only the ``known`` types: another is refused by its name."""
    for block in value if isinstance(value, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in known:
            raise ValueError(f"{where} block type '{kind}' is not supported by this service ({', '.join(known)})")
    return value


class CacheControl(_Wire):
    """A prompt-caching breakpoint: the engine reuses a slot's cached prefix on its own, so it is honoured as is."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Wire):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None


class Base64Source(_Wire):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(_Wire):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(_Wire):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(_Wire):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: JsonDict
    cache_control: CacheControl | None = None


class ToolResultBlock(_Wire):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] | None = None
    is_error: bool = False
    cache_control: CacheControl | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        return _known_blocks(value, ("text",), "tool_result content")


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(_Wire):
    role: Literal["user", "assistant", "system"]
    content: list[Block]

    @field_validator("content", mode="before")
    @classmethod
    def _blocks(cls, value: object) -> object:
        return (
            [{"type": "text", "text": value}]
            if isinstance(value, str)
            else _known_blocks(value, BLOCK_TYPES, "content")
        )


class Tool(_Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: JsonDict
    cache_control: CacheControl | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, value: object) -> object:
        if isinstance(value, dict):
            kind = value.get("type")
            if kind not in (None, "custom"):
                raise ValueError(f"tool type '{kind}' is not supported by this service (only custom tools)")
            value = {k: v for k, v in value.items() if k != "type"}
        return value

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, value: JsonDict) -> JsonDict:
        if value.get("type") != "object":
            raise ValueError('input_schema must be a JSON schema of "type": "object"')
        return value


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_for_tool(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("tool_choice of type 'tool' needs a 'name', and only it takes one")
        return self


class Metadata(_Wire):
    user_id: str | None = Field(default=None, max_length=256)


class CountTokensRequest(_Wire):
    """``/v1/messages/count_tokens``: the prompt part of a messages request."""

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    cache_control: CacheControl | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: MaxTokens
    stop_sequences: list[Annotated[str, Field(min_length=1, max_length=1000)]] | None = Field(None, max_length=64)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: Probability | None = None
    top_k: TopK | None = None
    stream: bool = False
    metadata: Metadata | None = None


def refuse_extras(model: BaseModel, where: str = "") -> None:
    """A 400 naming the first field, at any depth, that nothing here honours; unset or empty values and the
    values in ``_NEUTRAL`` ask for nothing and pass."""
    for name, value in (model.model_extra or {}).items():
        if value is None or value == [] or value == {} or value in _NEUTRAL.get(name, ()):
            continue
        raise InvalidRequest(f"'{where}{name}' is not supported by this service", param=f"{where}{name}")
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            refuse_extras(value, f"{where}{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    refuse_extras(item, f"{where}{name}.{i}.")


# ---------------------------------------------------------------- requests: Anthropic -> native


@dataclass(frozen=True)
class ForcedTool:
    """``tool_choice`` ``any`` or ``tool``: the engine answers JSON under a schema (a grammar), made a ``tool_use``.
    ``wrapped``: the answer is ``{"name": ..., "input": {...}}`` (a choice among several tools), else the input
    of ``names[0]`` itself."""

    names: tuple[str, ...]
    wrapped: bool


@dataclass(frozen=True)
class Plan:
    """The native ``/api/chat`` body, and what the answer's converter applies: the forced call, the stop sequences
    (matched on the way back: the engine would drop a matched sequence unseen), at most one ``tool_use`` block."""

    body: JsonDict
    forced: ForcedTool | None = None
    stop_sequences: tuple[str, ...] = ()
    one_tool_use: bool = False


def _system_text(system: str | list[TextBlock] | None) -> str:
    return system if isinstance(system, str) else "\n".join(block.text for block in system or [])


def _tool_result(block: ToolResultBlock, names: dict[str, str], where: str) -> JsonDict:
    name = names.get(block.tool_use_id)
    if name is None:
        raise InvalidRequest(
            f"tool_result for '{block.tool_use_id}' matches no tool_use block of an earlier assistant message",
            param=f"{where}.tool_use_id",
        )
    content = block.content if isinstance(block.content, str) else "\n".join(b.text for b in block.content or [])
    if block.is_error:
        content = f"Error: {content}"
    return {"role": "tool", "content": content, "tool_name": name}


_BLOCK_ROLES = MappingProxyType({"image": "user", "tool_use": "assistant", "tool_result": "user"})
"""The role whose messages may hold each non-text block (a system message holds text only)."""


def _message(msg: InputMessage, index: int, names: dict[str, str]) -> list[JsonDict]:
    """One Anthropic message as native messages: a user turn's tool results come first, as ``tool`` messages."""
    texts: list[str] = []
    images: list[str] = []
    calls: list[JsonDict] = []
    results: list[JsonDict] = []
    for j, block in enumerate(msg.content):
        where = f"messages.{index}.content.{j}"
        if not isinstance(block, TextBlock) and msg.role != _BLOCK_ROLES[block.type]:
            raise InvalidRequest(f"{block.type} blocks belong in {_BLOCK_ROLES[block.type]} messages", param=where)
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock):
            source = block.source
            images.append(source.data if isinstance(source, Base64Source) else source.url)
        elif isinstance(block, ToolUseBlock):
            names[block.id] = block.name
            calls.append({"function": {"name": block.name, "arguments": block.input}})
        else:
            results.append(_tool_result(block, names, where))
    out = list(results)
    if texts or images or calls or not results:
        native: JsonDict = {"role": msg.role, "content": "\n".join(texts)}
        if images:
            native["images"] = images
        if calls:
            native["tool_calls"] = calls
        out.append(native)
    return out


def _native_tool(tool: Tool) -> JsonDict:
    function = {"name": tool.name, "description": tool.description or None, "parameters": tool.input_schema}
    return {"type": "function", "function": {k: v for k, v in function.items() if v is not None}}


def _forced(tools: list[Tool], choice: ToolChoice) -> tuple[ForcedTool, JsonDict, str]:
    """The forced call, the JSON schema the engine must answer under, and the instruction the model reads."""
    if choice.type == "tool":
        chosen = [t for t in tools if t.name == choice.name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names '{choice.name}', which is not in tools", param="tool_choice.name")
        tools = chosen
    if len(tools) == 1:
        tool = tools[0]
        about = f" ({tool.description})" if tool.description else ""
        instruction = f"Call the tool '{tool.name}'{about}: answer only with its input, a JSON object."
        return ForcedTool((tool.name,), wrapped=False), tool.input_schema, instruction
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "input": t.input_schema},
            "required": ["name", "input"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    listed = "\n".join(f"- {t.name}" + (f": {t.description}" if t.description else "") for t in tools)
    instruction = (
        'Call one of these tools: answer only with a JSON object {"name": <the tool>, "input": <its input>}.\n' + listed
    )
    return ForcedTool(tuple(t.name for t in tools), wrapped=True), {"anyOf": options}, instruction


def _check_tools(req: CountTokensRequest) -> None:
    names = [t.name for t in req.tools or []]
    if len(set(names)) != len(names):
        raise InvalidRequest("tool names must be unique", param="tools")
    choice = req.tool_choice
    if choice is not None and choice.type in ("any", "tool") and not names:
        raise InvalidRequest(f"tool_choice '{choice.type}' needs tools", param="tool_choice")


def to_native(req: CountTokensRequest) -> Plan:
    """The native chat request for a messages (or count_tokens) request; 400s for what cannot be honoured."""
    refuse_extras(req)
    _check_tools(req)
    choice = req.tool_choice or ToolChoice(type="auto")
    forced: ForcedTool | None = None
    fmt: JsonDict | None = None
    system = _system_text(req.system)
    if choice.type in ("any", "tool"):
        forced, fmt, instruction = _forced(list(req.tools or []), choice)
        system = f"{system}\n\n{instruction}" if system else instruction
    names: dict[str, str] = {}
    messages: list[JsonDict] = [{"role": "system", "content": system}] if system else []
    for i, msg in enumerate(req.messages):
        messages += _message(msg, i, names)
    body: JsonDict = {"model": req.model, "messages": messages}
    if fmt is not None:
        body["format"] = fmt
    elif req.tools and choice.type == "auto":
        body["tools"] = [_native_tool(t) for t in req.tools]
    stops: tuple[str, ...] = ()
    if isinstance(req, MessagesRequest):
        stops = tuple(req.stop_sequences or ())
        if stops and forced is not None:
            raise InvalidRequest(
                "stop_sequences cannot be combined with a forced tool call (tool_choice 'any' or 'tool')",
                param="stop_sequences",
            )
        options: JsonDict = {"num_predict": req.max_tokens}
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(req, name)
            if value is not None:
                options[name] = value
        body["options"] = options
        # Stop sequences are matched here, on the way back, so the answer can name the one that matched: the
        # engine is streamed to and hung up on at the match.
        body["stream"] = req.stream or bool(stops)
    return Plan(body, forced, stops, one_tool_use=bool(choice.disable_parallel_tool_use))


def tokenize_body(body: JsonDict) -> JsonDict:
    """The engine's ``/api/tokenize`` body for a native chat body: its messages (system included) and tools."""
    out: JsonDict = {"messages": body["messages"]}
    if body.get("tools"):
        out["tools"] = body["tools"]
    return out


def estimate_tokens(body: JsonDict, bytes_per_token: int) -> int:
    """A conservative count when the engine has no tokenizer: one token per ``bytes_per_token`` bytes of text, and
    four per message for the template's markers."""
    messages = body.get("messages") or []
    size = sum(len(str(m.get("content", "")).encode()) for m in messages)
    if body.get("tools"):
        size += len(orjson.dumps(body["tools"]))
    return -(-size // bytes_per_token) + 4 * len(messages)
