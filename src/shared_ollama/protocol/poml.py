"""POML templates on the service API's chat: the request fields and the rendered template as a native chat.

``POST /api/v1/chat`` may carry ``poml`` (a POML document) and ``context`` (its variables) instead of
``messages``. The renderer (``service/poml``) turns them into POML's result: ``messages`` (speakers ``system``,
``human``, ``ai``), and, when the template declares them, ``schema`` (``<output-schema>``), ``tools``
(``<tool-definition>``) and ``runtime`` (``<runtime>`` attributes, camelCased). This module checks the request
fields, turns the result into the native chat body, and turns the renderer's error output into a message a
client can act on. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.native import ChatRequest

JsonDict = dict[str, Any]

ROLES = {"system": "system", "human": "user", "ai": "assistant"}
"""POML's speakers and the native roles they become."""

RUNTIME_OPTIONS = {
    "temperature": "temperature",
    "seed": "seed",
    "topP": "top_p",
    "topK": "top_k",
    "minP": "min_p",
    "maxTokens": "num_predict",
    "maxOutputTokens": "num_predict",
    "maxCompletionTokens": "num_predict",
    "stop": "stop",
    "stopSequences": "stop",
    "frequencyPenalty": "frequency_penalty",
    "presencePenalty": "presence_penalty",
    "repeatPenalty": "repeat_penalty",
}
"""``<runtime>`` attributes (as POML camelCases them) and the native ``options`` they set; ``model`` names the
model when the request does not."""

MAX_MESSAGE_CHARS = 600
"""A renderer's error message is cut to this many characters."""


class PomlChatRequest(ChatRequest):
    """``/api/v1/chat`` as Swagger shows it: a native chat, or a POML template and its variables."""

    poml: str | None = Field(
        default=None,
        description="A POML document rendered to this chat's messages (instead of `messages`).",
    )
    context: JsonDict | None = Field(default=None, description="The POML template's variables (with `poml` only).")


@dataclass(frozen=True, slots=True)
class PomlInput:
    markup: str
    context: JsonDict


def take_poml(body: JsonDict, *, max_bytes: int) -> PomlInput | None:
    """Remove ``poml`` and ``context`` from a chat body; the template to render, or None for a plain chat.

    Refused (400, naming the field): ``context`` without ``poml``, ``poml`` with ``messages``, a ``poml`` that is
    not a non-empty string or is longer than ``max_bytes`` (UTF-8), a ``context`` that is not an object.
    """
    markup = body.pop("poml", None)
    context = body.pop("context", None)
    if markup is None:
        if context is not None:
            raise InvalidRequest("context is the variables of a poml template: send it with poml", param="context")
        return None
    if not isinstance(markup, str) or not markup.strip():
        raise InvalidRequest("poml must be a non-empty string holding a POML document", param="poml")
    if "messages" in body:
        raise InvalidRequest("send either poml (rendered to messages) or messages, not both", param="poml")
    size = len(markup.encode())
    if size > max_bytes:
        raise InvalidRequest(f"poml is {size} bytes; the limit is {max_bytes}", param="poml")
    if context is not None and not isinstance(context, dict):
        raise InvalidRequest("context must be a JSON object of the template's variables", param="context")
    return PomlInput(markup, context or {})


def _text(content: object) -> str:
    """A rendered message's content as text: POML gives a string, or a list of parts when a message holds more
    than text (images, tool calls and results), which a chat here cannot carry."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, str) for part in content):
        return "\n\n".join(content)
    raise InvalidRequest(
        "the poml template rendered a message with images or tool calls; only text messages are supported "
        "(send images in messages[].images without poml)",
        param="poml",
    )


def _messages(rendered: JsonDict) -> list[JsonDict]:
    raw = rendered.get("messages")
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("the poml template rendered no messages", param="poml")
    messages = []
    for item in raw:
        speaker = item.get("speaker") if isinstance(item, dict) else None
        role = ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise InvalidRequest(
                f"the poml template rendered a message from {speaker!r}, not a chat role", param="poml"
            )
        messages.append({"role": role, "content": _text(item.get("content"))})
    return messages


def _tools(tools: object) -> list[JsonDict]:
    if not isinstance(tools, list):
        raise InvalidRequest("the poml template's tool definitions did not render to a list", param="poml")
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidRequest("the poml template rendered a tool definition without a name", param="poml")
        function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object"}}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _apply_runtime(body: JsonDict, runtime: object) -> None:
    """``<runtime>`` parameters as the body's model and options; what the request itself sets wins."""
    if not isinstance(runtime, dict):
        raise InvalidRequest("the poml template's <runtime> did not render to parameters", param="poml")
    options = body.get("options")
    if options is None:
        options = body["options"] = {}
    elif not isinstance(options, dict):
        return  # the request's own options are invalid: ChatRequest's validation says so
    for key, value in runtime.items():
        if key == "model":
            if not body.get("model"):
                body["model"] = value
            continue
        name = RUNTIME_OPTIONS.get(key)
        if name is None:
            known = ", ".join(["model", *RUNTIME_OPTIONS])
            raise InvalidRequest(
                f"the poml template's <runtime> sets {key!r}, which this service does not support "
                f"(supported, camelCased as POML does: {known})",
                param="poml",
            )
        options.setdefault(name, value)


def apply_rendered(body: JsonDict, rendered: object) -> None:
    """Fill a chat body (``poml`` and ``context`` already taken out) from the renderer's result: ``messages``;
    the template's output schema as ``format``, its tools as ``tools``, its runtime parameters as ``model`` and
    ``options``. A template and a request that both set ``format`` or ``tools`` are refused (400 naming it)."""
    if not isinstance(rendered, dict):
        raise InvalidRequest("the poml template did not render to a chat", param="poml")
    body["messages"] = _messages(rendered)
    schema = rendered.get("schema")
    if schema:
        if body.get("format") is not None:
            raise InvalidRequest(
                "the poml template declares an <output-schema> and the request a format", param="format"
            )
        body["format"] = schema
    tools = rendered.get("tools")
    if tools:
        if body.get("tools") is not None:
            raise InvalidRequest("the poml template declares tools and the request too", param="tools")
        body["tools"] = _tools(tools)
    runtime = rendered.get("runtime")
    if runtime:
        _apply_runtime(body, runtime)


_ERROR_LINE = re.compile(r"^(?:[A-Za-z]*Error|Error): (?P<message>.+)$", re.MULTILINE)
_START = re.compile(r"^\s*startIndex: (?P<index>\d+),?$", re.MULTILINE)


def _position(markup: str, index: int) -> str:
    before = markup[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return f"line {line}, column {column}"


def renderer_message(stderr: str, markup: str, work_dir: str) -> str:
    """The renderer's own error message from its error output (``ReadError: ...``, with the template position
    when it gives one), without the service's paths; a generic one when there is none."""
    found = _ERROR_LINE.search(stderr)
    if found is None:
        return "the poml template could not be rendered"
    message = found.group("message").strip().replace(work_dir, ".")
    start = _START.search(stderr, found.end())
    if start is not None and int(start.group("index")) <= len(markup):
        message = f"{message} (at {_position(markup, int(start.group('index')))})"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    return f"the poml template could not be rendered: {message}"
