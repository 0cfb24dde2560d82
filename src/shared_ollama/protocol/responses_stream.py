"""The Responses API's answer: the response object and its stream events, from native chat answers.

``ResponseEvents`` turns native chat chunks (or one whole native answer) into OpenAI's event sequence
(``response.created``, ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``..., the ``.done`` events, ``response.completed`` or ``response.incomplete``;
``response.function_call_arguments.delta``/``.done`` for tool calls; ``response.failed`` on an error), each with
its ``sequence_number``; ``response`` is the object as it stands, the final one once the answer is done. A
non-streamed answer is the same machine fed one native answer, so both paths give the same object. No I/O.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import orjson

from shared_ollama.protocol.responses import FunctionTool, ResponsesRequest, new_id
from shared_ollama.protocol.responses_convert import ForcedCall

JsonDict = dict[str, Any]


def _json_object(text: str) -> JsonDict | None:
    """``text`` parsed when it is one JSON object, else None."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- the response object


def _tool_echo(tool: FunctionTool) -> JsonDict:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def _format_echo(req: ResponsesRequest) -> JsonDict:
    fmt = req.text.format if req.text is not None else None
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(by_alias=True, exclude_none=True)


def _choice_echo(req: ResponsesRequest) -> str | JsonDict:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump(exclude_none=True)


def response_shape(req: ResponsesRequest, *, response_id: str, created_at: int, model: str) -> JsonDict:
    """The response object as it starts (``in_progress``, no output): what it echoes of the request."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": None,
        "safety_identifier": req.safety_identifier,
        "service_tier": "default",
        "store": req.stored,
        "temperature": req.temperature,
        "text": {"format": _format_echo(req)},
        "tool_choice": _choice_echo(req),
        "tools": [_tool_echo(t) for t in req.tools or []],
        "top_p": req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": None,
        "user": req.user,
        "metadata": dict(req.metadata or {}),
    }


def usage(native: JsonDict) -> JsonDict:
    prompt = int(native.get("prompt_eval_count") or 0)
    completion = int(native.get("eval_count") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def output_to_native(output: list[JsonDict]) -> list[JsonDict]:
    """A response's output items as the native assistant message that continues the conversation."""
    texts: list[str] = []
    calls: list[JsonDict] = []
    for item in output:
        if item.get("type") == "message":
            texts += [part.get("text", "") for part in item.get("content") or [] if part.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            arguments = _json_object(str(item.get("arguments") or "{}"))
            calls.append(
                {"id": item.get("call_id"), "function": {"name": item.get("name"), "arguments": arguments or {}}}
            )
    if not texts and not calls:
        return []
    message: JsonDict = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return [message]


# ---------------------------------------------------------------- the event machine


def _part(text: str) -> JsonDict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponseEvents:
    """The events of one response, fed native chat chunks in order (``start`` first, then ``feed``; ``fail`` ends
    it with an error instead). ``forced``: the tool call the request forces; ``parallel``: more than one call of
    the model's own may be answered (``parallel_tool_calls``)."""

    def __init__(
        self,
        shape: JsonDict,
        *,
        forced: ForcedCall | None = None,
        parallel: bool = True,
        ids: Callable[[str], str] = new_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.response = copy.deepcopy(shape)
        self.finished = False
        self._forced = forced
        self._parallel = parallel
        self._ids = ids
        self._clock = clock
        self._seq = 0
        self._output: list[JsonDict] = []
        self._open: JsonDict | None = None
        """The item being streamed (a message, or the forced call when its name is known)."""
        self._text = ""
        self._calls = 0

    # --- the sequence

    def start(self) -> list[JsonDict]:
        snapshot = copy.deepcopy(self.response)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=copy.deepcopy(snapshot)),
        ]

    def feed(self, native: JsonDict) -> list[JsonDict]:
        """The events one native chunk (or whole answer) makes; the closing ones when it is the final one."""
        if self.finished:
            return []
        events: list[JsonDict] = []
        message = native.get("message") or {}
        content = message.get("content") or ""
        if content:
            events += self._forced_text(content) if self._forced is not None else self._message_text(content)
        for call in message.get("tool_calls") or []:
            events += self._model_call(call)
        if native.get("done"):
            events += self._finish(native)
        return events

    def fail(self, error: JsonDict) -> list[JsonDict]:
        """``response.failed`` with ``error``; what was produced so far stays in the output."""
        if self.finished:
            return []
        self.finished = True
        output = list(self._output)
        if self._open is not None:
            output.append(self._closed_item("incomplete"))
        self.response.update(status="failed", error=error, output=output)
        return [self._event("response.failed", response=copy.deepcopy(self.response))]

    # --- items

    def _event(self, kind: str, **fields: Any) -> JsonDict:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    @property
    def _index(self) -> int:
        return len(self._output)

    def _message_text(self, text: str) -> list[JsonDict]:
        events: list[JsonDict] = []
        if self._open is None:
            events += self._open_message()
        self._text += text
        item_id = self._open["id"] if self._open else ""
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item_id,
                output_index=self._index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _open_message(self) -> list[JsonDict]:
        item = {"id": self._ids("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        self._open, self._text = item, ""
        return [
            self._event("response.output_item.added", output_index=self._index, item=copy.deepcopy(item)),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._index,
                content_index=0,
                part=_part(""),
            ),
        ]

    def _closed_item(self, status: str) -> JsonDict:
        item = dict(self._open or {})
        item["status"] = status
        if item.get("type") == "message":
            item["content"] = [_part(self._text)]
        else:
            item["arguments"] = self._text
        return item

    def _close(self, status: str) -> list[JsonDict]:
        """Close the open item: its ``.done`` events, and it joins the output."""
        if self._open is None:
            return []
        item = self._closed_item(status)
        index, item_id = self._index, item["id"]
        if item["type"] == "message":
            events = [
                self._event(
                    "response.output_text.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    text=self._text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item_id,
                    output_index=index,
                    content_index=0,
                    part=_part(self._text),
                ),
            ]
        else:
            events = [
                self._event(
                    "response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=self._text
                )
            ]
        events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        self._output.append(item)
        self._open, self._text = None, ""
        return events

    def _whole_call(self, name: str, arguments: str, status: str = "completed") -> list[JsonDict]:
        """A function call known whole: its events at once."""
        self._open = {
            "id": self._ids("fc"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": self._ids("call"),
            "name": name,
            "arguments": "",
        }
        self._text = arguments
        index, item_id = self._index, self._open["id"]
        events = [
            self._event("response.output_item.added", output_index=index, item=copy.deepcopy(self._open)),
            self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=arguments),
        ]
        return events + self._close(status)

    def _model_call(self, call: JsonDict) -> list[JsonDict]:
        """A tool call the model made on its own (``tool_choice`` auto)."""
        if self._calls and not self._parallel:
            return []
        self._calls += 1
        function = call.get("function") or {}
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        return self._close("completed") + self._whole_call(str(function.get("name", "")), text)

    def _forced_text(self, text: str) -> list[JsonDict]:
        """The forced call's JSON as it comes: streamed as argument deltas when the function is known, else kept."""
        assert self._forced is not None
        name = self._forced.name
        if name is None:
            self._text += text
            return []
        events: list[JsonDict] = []
        if self._open is None:
            self._open = {
                "id": self._ids("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": self._ids("call"),
                "name": name,
                "arguments": "",
            }
            events.append(
                self._event("response.output_item.added", output_index=self._index, item=copy.deepcopy(self._open))
            )
            self._text = ""
        self._text += text
        events.append(
            self._event(
                "response.function_call_arguments.delta", item_id=self._open["id"], output_index=self._index, delta=text
            )
        )
        return events

    def _finish_forced(self, cut: bool) -> list[JsonDict]:
        assert self._forced is not None
        if self._forced.name is not None:
            if self._open is None:  # no text at all: the call without arguments
                return self._whole_call(self._forced.name, "{}", "incomplete" if cut else "completed")
            whole = _json_object(self._text) is not None
            return self._close("completed" if whole and not cut else "incomplete")
        text, self._text = self._text, ""
        answer = _json_object(text)
        name = answer.get("name") if answer else None
        if answer is None or not isinstance(name, str) or name not in self._forced.names:
            return self._message_text(text) + self._close("incomplete") if text else []
        return self._whole_call(name, orjson.dumps(answer.get("arguments") or {}).decode())

    def _finish(self, native: JsonDict) -> list[JsonDict]:
        cut = native.get("done_reason") == "length"
        events = (
            self._finish_forced(cut) if self._forced is not None else self._close("incomplete" if cut else "completed")
        )
        if not self._output:  # an empty answer is still one (empty) message
            events += self._open_message() + self._close("incomplete" if cut else "completed")
        self.finished = True
        self.response.update(output=list(self._output), usage=usage(native))
        if cut:
            self.response.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
            return [*events, self._event("response.incomplete", response=copy.deepcopy(self.response))]
        self.response.update(status="completed", completed_at=int(self._clock()))
        return [*events, self._event("response.completed", response=copy.deepcopy(self.response))]
