"""Native chat answers as Anthropic Messages events, and events folded back into one message. No I/O.

``MessageEvents`` turns native chunks (a stream's lines, or a non-streamed answer as one final chunk) into the
event sequence the ``anthropic`` SDK parses: ``message_start``, per content block ``content_block_start``,
``content_block_delta`` (``text_delta`` / ``input_json_delta``) and ``content_block_stop``, then ``message_delta``
(stop reason and usage) and ``message_stop``. ``accumulate`` folds events into the non-streamed ``Message``, so a
non-streamed answer is the same conversion. Stop sequences are matched on the text here (``StopScanner``): the
caller stops reading the engine at a match (``cut``) and ends the message with ``finish``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson

from shared_ollama.errors import SharedOllamaError
from shared_ollama.protocol.anthropic import Plan

JsonDict = dict[str, Any]
Event = tuple[str, JsonDict]
"""An SSE event: its name (also its ``type``) and its data."""


class StopScanner:
    """Finds the first stop sequence in text that arrives in pieces, holding back a tail that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""

    def push(self, text: str) -> tuple[str, str | None]:
        """(text safe to pass on, the stop sequence matched or None); after a match the rest is dropped."""
        buffer = self.held + text
        found: tuple[int, str] | None = None
        for stop in self.stops:
            at = buffer.find(stop)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, stop)
        if found is not None:
            self.held = ""
            return buffer[: found[0]], found[1]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self.held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def _event(kind: str, **data: Any) -> Event:
    return kind, {"type": kind, **data}


class MessageEvents:
    """The event sequence of one answer; ``feed`` each native chunk in order."""

    def __init__(self, plan: Plan, message_id: str) -> None:
        self.plan = plan
        self.message_id = message_id
        self.scanner = StopScanner(plan.stop_sequences) if plan.stop_sequences else None
        self.started = False
        self.done = False
        self.cut: str | None = None
        """The stop sequence that matched: the caller stops reading and calls ``finish``."""
        self.chunks = 0
        """Native chunks that carried output (the embedded engine streams one per token)."""
        self.index = 0
        self.open_text = False
        self.tool_uses = 0
        self.forced_text: list[str] = []

    def feed(self, native: JsonDict) -> list[Event]:
        events: list[Event] = []
        if not self.started:
            self.started = True
            message = {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": native.get("model", ""),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            events.append(_event("message_start", message=message))
        if self.done or self.cut is not None:
            return events
        message = native.get("message") or {}
        text = str(message.get("content") or "")
        calls = message.get("tool_calls") or []
        if text or calls:
            self.chunks += 1
        if self.plan.forced is not None:
            self.forced_text.append(text)
        elif text:
            self._text(text, events)
            if self.cut is not None:
                return events
        if self.plan.forced is None:
            for call in calls:
                self._tool_use(call.get("function") or {}, events)
        if native.get("done"):
            events += self._end(native)
        return events

    def finish(self, input_tokens: int) -> list[Event]:
        """The end of a message cut at a stop sequence (``input_tokens``: the prompt, counted by the caller)."""
        events = self._close_text()
        usage = {"input_tokens": input_tokens, "output_tokens": self.chunks}
        return events + self._stop("stop_sequence", self.cut, usage)

    @property
    def output_tokens(self) -> int:
        return self.chunks

    def _text(self, text: str, events: list[Event], *, scan: bool = True) -> None:
        if scan and self.scanner is not None:
            text, self.cut = self.scanner.push(text)
        if not text:
            return
        if not self.open_text:
            events.append(_event("content_block_start", index=self.index, content_block={"type": "text", "text": ""}))
            self.open_text = True
        events.append(_event("content_block_delta", index=self.index, delta={"type": "text_delta", "text": text}))

    def _close_text(self) -> list[Event]:
        if not self.open_text:
            return []
        self.open_text = False
        self.index += 1
        return [_event("content_block_stop", index=self.index - 1)]

    def _tool_use(self, function: JsonDict, events: list[Event]) -> None:
        if self.plan.one_tool_use and self.tool_uses:
            return
        events += self._close_text()
        arguments = function.get("arguments")
        block = {
            "type": "tool_use",
            "id": f"toolu_{self.message_id.removeprefix('msg_')}_{self.tool_uses}",
            "name": str(function.get("name") or ""),
            "input": {},
        }
        partial = orjson.dumps(arguments if isinstance(arguments, dict) else {}).decode()
        events.append(_event("content_block_start", index=self.index, content_block=block))
        events.append(
            _event("content_block_delta", index=self.index, delta={"type": "input_json_delta", "partial_json": partial})
        )
        events.append(_event("content_block_stop", index=self.index))
        self.index += 1
        self.tool_uses += 1

    def _forced_call(self) -> JsonDict | None:
        """The forced answer as ``{"name", "arguments"}``, or None when it is not a complete call."""
        forced = self.plan.forced
        assert forced is not None
        try:
            value = orjson.loads("".join(self.forced_text))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        if not forced.wrapped:
            return {"name": forced.names[0], "arguments": value}
        name, arguments = value.get("name"), value.get("input")
        if name not in forced.names or not isinstance(arguments, dict):
            return None
        return {"name": name, "arguments": arguments}

    def _end(self, native: JsonDict) -> list[Event]:
        self.done = True
        events: list[Event] = []
        if self.scanner is not None:
            self._text(self.scanner.flush(), events, scan=False)
        if self.plan.forced is not None:
            call = self._forced_call()
            if call is not None:
                self._tool_use(call, events)
            elif any(self.forced_text):  # cut short (max_tokens): the partial JSON as text
                self._text("".join(self.forced_text), events, scan=False)
        events += self._close_text()
        length = native.get("done_reason") == "length"
        reason = "tool_use" if self.tool_uses else "max_tokens" if length else "end_turn"
        usage = {
            "input_tokens": int(native.get("prompt_eval_count") or 0),
            "output_tokens": int(native.get("eval_count") or 0),
        }
        return events + self._stop(reason, None, usage)

    def _stop(self, reason: str, sequence: str | None, usage: JsonDict) -> list[Event]:
        self.done = True
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return [_event("message_delta", delta=delta, usage=usage), _event("message_stop")]


def accumulate(events: list[Event]) -> JsonDict:
    """The non-streamed ``Message`` the events describe (as the SDK folds a stream)."""
    message: JsonDict = {}
    partial: dict[int, list[str]] = {}
    for kind, data in events:
        if kind == "message_start":
            message = {**data["message"], "content": [], "usage": dict(data["message"]["usage"])}
        elif kind == "content_block_start":
            message["content"].append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                message["content"][data["index"]]["text"] += delta["text"]
            else:
                partial.setdefault(data["index"], []).append(delta["partial_json"])
        elif kind == "content_block_stop" and data["index"] in partial:
            message["content"][data["index"]]["input"] = orjson.loads("".join(partial.pop(data["index"])))
        elif kind == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


def sse(event: Event) -> bytes:
    return b"event: " + event[0].encode() + b"\ndata: " + orjson.dumps(event[1]) + b"\n\n"


# ---------------------------------------------------------------- errors


OVERLOADED_STATUS = 529
"""Anthropic's status for an overloaded service: ours when the shared queue is full."""
_ERROR_TYPES = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        408: "timeout_error",
        413: "request_too_large",
        429: "rate_limit_error",
    }
)


def error_status_and_body(exc: SharedOllamaError, request_id: str) -> tuple[int, JsonDict]:
    """The status and Anthropic's ``{"type": "error", "error": {"type", "message"}}`` body for a service error:
    a full queue is ``529 overloaded_error``; other 5xx keep their status as ``api_error``."""
    if exc.code == "queue_full":
        status, kind = OVERLOADED_STATUS, "overloaded_error"
    else:
        status = exc.status
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error: JsonDict = {"type": kind, "message": exc.message}
    if exc.retry_after is not None:
        error["retry_after"] = exc.retry_after
    return status, {"type": "error", "error": error, "request_id": request_id}
