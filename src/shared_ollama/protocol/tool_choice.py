"""OpenAI's ``tool_choice`` honoured over the native API (pure; no I/O).

Ollama ignores ``tool_choice``, and a small model given tools often answers in prose. So:

- ``auto`` (the default): the tools go to the engine, the model decides;
- ``none``: the tools are not sent at all (the model cannot call one);
- ``required`` or a named function (``{"type": "function", "function": {"name": ...}}``): the tools are described in
  a system message and the answer is constrained by a native ``format`` JSON schema shaped like a call,
  ``{"name": <one of the allowed names>, "arguments": <that function's parameters schema>}``. The engine's grammar
  makes the model write exactly that, and the JSON answer becomes the tool call. This works on Ollama and on the
  embedded engine alike: ``format`` is native.

One call per answer (``parallel_tool_calls`` cannot add more when a call is forced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from shared_ollama.errors import InvalidRequest

JsonDict = dict[str, Any]


def _empty_parameters() -> JsonDict:
    """A fresh schema of no arguments (a new dict each time: request bodies are changed in place downstream)."""
    return {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ForcedCall:
    """A call the answer must be: one of ``tools`` (all of them for ``required``, one for a named function)."""

    tools: tuple[JsonDict, ...]
    """The allowed functions, each ``{"name", "description", "parameters"}``."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(str(t["name"]) for t in self.tools)


def _functions(tools: list[JsonDict] | None) -> list[JsonDict]:
    """The function tools' definitions (``{"name", "description", "parameters"}``); 400 for any other tool."""
    out = []
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise InvalidRequest("each tool must be {'type': 'function', 'function': {...}}", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("each function tool needs a 'name'", param="tools")
        parameters = fn.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"the parameters of function '{name}' must be a JSON schema object", param="tools")
        out.append({"name": name, "description": str(fn.get("description") or ""), "parameters": parameters})
    return out


def forced_call(tools: list[JsonDict] | None, choice: str | JsonDict | None) -> ForcedCall | None:
    """The call ``choice`` forces, or None when it forces none (``auto``, ``none``, unset); 400 naming
    ``tool_choice`` when it names no known function or forces a call without tools."""
    if choice is None or choice in ("auto", "none"):
        return None
    functions = _functions(tools)
    if choice == "required":
        if not functions:
            raise InvalidRequest("tool_choice 'required' needs at least one tool in 'tools'", param="tool_choice")
        return ForcedCall(tuple(functions))
    named = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = named.get("name") if isinstance(named, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    chosen = [f for f in functions if f["name"] == name]
    if not chosen:
        raise InvalidRequest(f"tool_choice names function '{name}', which is not in 'tools'", param="tool_choice")
    return ForcedCall((chosen[0],))


def call_schema(forced: ForcedCall) -> JsonDict:
    """The native ``format``: a JSON object naming one allowed function and giving its arguments."""

    def one(fn: JsonDict) -> JsonDict:
        return {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [fn["name"]]},
                "arguments": fn["parameters"] or _empty_parameters(),
            },
            "required": ["name", "arguments"],
        }

    schemas = [one(fn) for fn in forced.tools]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def instructions(forced: ForcedCall) -> str:
    """What the system message tells the model: which function(s) to call, and how the answer looks."""
    listed = orjson.dumps(list(forced.tools)).decode()
    which = f"the function '{forced.names[0]}'" if len(forced.names) == 1 else "one of these functions"
    return (
        f"Call {which}. Answer with only a JSON object: "
        '{"name": <the function\'s name>, "arguments": <an object with its arguments>}. '
        f"Functions: {listed}"
    )


def with_instructions(messages: list[JsonDict], forced: ForcedCall) -> list[JsonDict]:
    """``messages`` (native) with the instructions added to the first system message, or in a new one first."""
    text = instructions(forced)
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{text}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def call_from_answer(native: JsonDict, forced: ForcedCall) -> JsonDict:
    """A native chat answer whose content is the forced call's JSON, as a native answer with that tool call.

    An answer that is not such a call (cut short by the token limit, say) is returned as it is: its text stays
    the content, and its ``done_reason`` says why.
    """
    message = native.get("message") if isinstance(native.get("message"), dict) else {}
    try:
        call = orjson.loads(str(message.get("content") or ""))
    except orjson.JSONDecodeError:
        return native
    if (
        not isinstance(call, dict)
        or call.get("name") not in forced.names
        or not isinstance(call.get("arguments"), dict)
    ):
        return native
    tool_call = {"function": {"name": call["name"], "arguments": call["arguments"]}}
    return {**native, "message": {**message, "content": "", "tool_calls": [tool_call]}}


@dataclass
class ForcedCallStream:
    """A streamed forced call: the native chunks' text is held back, and the final chunk carries the call."""

    forced: ForcedCall
    _parts: list[str] = field(default_factory=list)
    _logprobs: list[Any] = field(default_factory=list)

    def feed(self, native: JsonDict) -> JsonDict | None:
        """None while the call's JSON is arriving; at the final chunk, that chunk with the whole answer (and the
        log probabilities of all its tokens, when they were asked for)."""
        message = native.get("message") if isinstance(native.get("message"), dict) else {}
        if isinstance(message.get("content"), str):
            self._parts.append(message["content"])
        if isinstance(native.get("logprobs"), list):
            self._logprobs += native["logprobs"]
        if not native.get("done"):
            return None
        whole = {**native, "message": {**message, "role": "assistant", "content": "".join(self._parts)}}
        if self._logprobs:
            whole["logprobs"] = self._logprobs
        return call_from_answer(whole, self.forced)
