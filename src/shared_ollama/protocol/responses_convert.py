"""Pure conversion of a Responses API request to one native ``/api/chat`` body.

``instructions`` becomes a system message, the conversation (the stored one of ``previous_response_id`` first,
then this request's ``input`` items) the messages, ``text.format`` the native ``format``, function tools the
native ``tools``. A tool call the request forces (``tool_choice`` ``required``, a named function, or
``allowed_tools`` in ``required`` mode) is asked for with a native ``format`` schema the answer must match (the
engine's grammar enforces it) and a system line naming the functions; ``responses_stream.py`` reads the answer
back as a ``function_call`` item. ``truncation: auto`` drops the oldest turns (``drop_oldest``). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.convert import _arguments
from shared_ollama.protocol.responses import (
    FunctionCallItem,
    FunctionTool,
    InputImage,
    MessageItem,
    OutputText,
    ResponsesRequest,
    ToolChoiceAllowed,
    ToolChoiceFunction,
    new_id,
    refuse_unsupported_fields,
)

JsonDict = dict[str, Any]

DETAIL_RANK = MappingProxyType({"low": 0, "auto": 1, "high": 1, "original": 2})
"""Image ``detail`` levels, ordered: a request's images are prepared at the highest level any of them asks."""


# ---------------------------------------------------------------- tools


@dataclass(frozen=True, slots=True)
class ForcedCall:
    """A tool call the request forces: the answer is the call, shaped by a native ``format`` schema."""

    names: tuple[str, ...]
    """The functions it may call; with one, the answer is that function's arguments object, with several an
    object ``{"name": ..., "arguments": {...}}``."""
    schema: JsonDict
    hint: str
    """A line for the system message saying what to answer (the tools' descriptions included)."""

    @property
    def name(self) -> str | None:
        return self.names[0] if len(self.names) == 1 else None


def _no_parameters() -> JsonDict:
    """A fresh schema of no arguments (a new dict each time: request bodies are changed in place downstream)."""
    return {"type": "object", "properties": {}, "additionalProperties": False}


def _parameters(tool: FunctionTool) -> JsonDict:
    params = tool.parameters
    return params if params and params.get("properties") else _no_parameters()


def _native_tool(tool: FunctionTool) -> JsonDict:
    function: JsonDict = {"name": tool.name, "parameters": tool.parameters or _no_parameters()}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _forced(tools: list[FunctionTool]) -> ForcedCall:
    described = "; ".join(f"{t.name} ({t.description})" if t.description else t.name for t in tools)
    if len(tools) == 1:
        hint = f"Answer with a call to the function {described}: reply with its arguments as a JSON object."
        return ForcedCall((tools[0].name,), _parameters(tools[0]), hint)
    shapes = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": _parameters(t)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    hint = (
        f"Answer with a call to one of these functions: {described}. Reply with a JSON object "
        '{"name": <the function>, "arguments": <its arguments>}.'
    )
    return ForcedCall(tuple(t.name for t in tools), {"anyOf": shapes}, hint)


def tool_plan(req: ResponsesRequest) -> tuple[list[JsonDict], ForcedCall | None]:
    """(native tools the model may call on its own, the forced call) under ``tool_choice``."""
    tools = list(req.tools or [])
    choice = req.tool_choice or "auto"
    names = {t.name for t in tools}
    if len(names) != len(tools):
        raise InvalidRequest("tools must have distinct names", param="tools")
    mode: str
    if isinstance(choice, ToolChoiceFunction):
        wanted = [choice.name]
        mode = "required"
    elif isinstance(choice, ToolChoiceAllowed):
        wanted = [t.name for t in choice.tools]
        mode = choice.mode
    else:
        wanted = [t.name for t in tools]
        mode = choice
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise InvalidRequest(f"tool_choice names '{unknown[0]}', which is not in tools", param="tool_choice")
    chosen = [t for t in tools if t.name in wanted]
    if mode == "none":
        return [], None
    if mode == "required":
        if not chosen:
            raise InvalidRequest("tool_choice 'required' needs at least one function in tools", param="tool_choice")
        return [], _forced(chosen)
    return [_native_tool(t) for t in chosen], None


def text_format(req: ResponsesRequest) -> str | JsonDict | None:
    """The native ``format`` for ``text.format`` (json_schema, strict or not: the schema itself)."""
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    if not fmt.name or not isinstance(fmt.schema_, dict):
        raise InvalidRequest("text.format json_schema needs a 'name' and a 'schema' object", param="text.format")
    return fmt.schema_


# ---------------------------------------------------------------- input items -> native messages


def _content(role: str, content: str | list[Any], where: str) -> tuple[str, list[str], list[str]]:
    """(text, image URLs, image detail levels) of a message's content."""
    if isinstance(content, str):
        return content, [], []
    texts: list[str] = []
    images: list[str] = []
    details: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if isinstance(part, OutputText) != (role == "assistant"):
            kind = "output_text" if role == "assistant" else "input_text or input_image"
            raise InvalidRequest(f"{at}: a {role} message takes {kind} parts, not {part.type}", param=at)
        if isinstance(part, InputImage):
            if part.file_id is not None or not part.image_url:
                raise InvalidRequest(f"{at}: images are sent as image_url (files are not supported)", param=at)
            images.append(part.image_url)  # data URLs and http(s) URLs: the image pipeline decodes, fetches or refuses
            details.append(part.detail)
        else:
            texts.append(part.text)
    return "\n".join(texts), images, details


def _parts(content: list[Any]) -> list[JsonDict]:
    """A message's content as the list of parts an input item lists."""
    return [part.model_dump(by_alias=True, exclude_none=True) for part in content]


def calls_of(messages: list[JsonDict]) -> dict[str, str]:
    """Call id -> function name of every tool call in native ``messages``."""
    out: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id"):
                out[str(call["id"])] = str((call.get("function") or {}).get("name", ""))
    return out


@dataclass(frozen=True, slots=True)
class Converted:
    messages: list[JsonDict]
    """This request's input as native messages."""
    items: list[JsonDict]
    """This request's input items as ``GET /v1/responses/{id}/input_items`` lists them (each with an id)."""
    detail: str | None
    """The highest image ``detail`` asked (``low``, ``auto``/``high``, ``original``), None without images."""


def input_to_native(req: ResponsesRequest, history: list[JsonDict]) -> Converted:
    """``input`` as native messages; function calls join the assistant message before them, as a native
    assistant turn carries its calls."""
    known = calls_of(history)
    messages: list[JsonDict] = []
    items: list[JsonDict] = []
    details: list[str] = []
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        if isinstance(item, MessageItem):
            text, images, asked = _content(item.role, item.content, where)
            message: JsonDict = {"role": "system" if item.role == "developer" else item.role, "content": text}
            if images:
                message["images"] = images
                details += asked
            messages.append(message)
            content = _parts(item.content)
            msg_id = item.id or new_id("msg")
            items.append(
                {"id": msg_id, "type": "message", "role": item.role, "status": "completed", "content": content}
            )
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "function": {"name": item.name, "arguments": _call_arguments(item, where)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not last.get("images"):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            known[item.call_id] = item.name
            items.append(item.model_dump(exclude_none=True) | {"id": item.id or new_id("fc"), "status": "completed"})
        else:
            name = known.get(item.call_id)
            if name is None:
                raise InvalidRequest(
                    f"{where}: no function call with call_id '{item.call_id}' in this input or the previous response",
                    param=f"{where}.call_id",
                )
            text, images, asked = _content("user", item.output, where)
            message = {"role": "tool", "content": text, "tool_name": name, "tool_call_id": item.call_id}
            if images:
                message["images"] = images
                details += asked
            messages.append(message)
            output: object = item.output if isinstance(item.output, str) else _parts(item.output)
            out_id = item.id or new_id("fco")
            items.append(
                {"id": out_id, "type": "function_call_output", "call_id": item.call_id, "output": output}
                | {"status": "completed"}
            )
    detail = max(details, key=DETAIL_RANK.__getitem__) if details else None
    return Converted(messages, items, detail)


def _call_arguments(item: FunctionCallItem, where: str) -> JsonDict:
    try:
        return _arguments(item.arguments)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}.arguments: {exc.message}", param=f"{where}.arguments") from None


# ---------------------------------------------------------------- the native body


@dataclass(frozen=True, slots=True)
class Prepared:
    preamble: list[JsonDict]
    """System messages that are not part of the conversation (``instructions``, the forced call's hint)."""
    conversation: list[JsonDict]
    """The stored conversation of ``previous_response_id``, then this request's input, as native messages."""
    fields: JsonDict
    """The rest of the native chat body (model, stream, options, format, tools)."""
    items: list[JsonDict]
    forced: ForcedCall | None
    detail: str | None

    def body(self, conversation: list[JsonDict] | None = None) -> JsonDict:
        """A fresh native chat body (with ``conversation`` instead of the whole one, when truncated): the
        pipeline may change its options and images in place."""
        body = {
            **self.fields,
            "messages": [*self.preamble, *(self.conversation if conversation is None else conversation)],
        }
        if "options" in body:
            body["options"] = dict(body["options"])
        return body


def request_to_native(req: ResponsesRequest, history: list[JsonDict]) -> Prepared:
    refuse_unsupported_fields(req)
    tools, forced = tool_plan(req)
    fmt = text_format(req)
    if forced is not None and fmt is not None:
        raise InvalidRequest(
            "a forced tool call (tool_choice) cannot be combined with text.format", param="tool_choice"
        )
    converted = input_to_native(req, history)
    system = "\n\n".join(s for s in (req.instructions, forced.hint if forced else None) if s)
    fields: JsonDict = {"model": req.model, "stream": req.stream}
    options: JsonDict = {}
    for name, value in (("temperature", req.temperature), ("top_p", req.top_p)):
        if value is not None:
            options[name] = value
    if req.max_output_tokens is not None:
        options["num_predict"] = req.max_output_tokens
    if options:
        fields["options"] = options
    if forced is not None:
        fields["format"] = forced.schema
    elif fmt is not None:
        fields["format"] = fmt
    if tools:
        fields["tools"] = tools
    return Prepared(
        preamble=[{"role": "system", "content": system}] if system else [],
        conversation=[*history, *converted.messages],
        fields=fields,
        items=converted.items,
        forced=forced,
        detail=converted.detail,
    )


# ---------------------------------------------------------------- truncation: auto


def turns(conversation: list[JsonDict]) -> list[list[JsonDict]]:
    """The conversation in droppable groups: a message with the tool results that answer it."""
    groups: list[list[JsonDict]] = []
    for message in conversation:
        if message.get("role") == "tool" and groups:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def drop_oldest(conversation: list[JsonDict], count: int) -> list[JsonDict]:
    """The conversation without its ``count`` oldest groups (the newest group always stays)."""
    groups = turns(conversation)
    kept = groups[min(count, len(groups) - 1) :]
    return [message for group in kept for message in group]
