"""An OpenAI-compatible host's streamed answer as native (Ollama) NDJSON lines. No I/O.

Feed each SSE ``data:`` event's JSON to ``feed`` as it arrives and write the lines it returns; at ``data: [DONE]``
(or the end of a stream that has sent its ``finish_reason``) ``finish`` gives the last lines. Content and reasoning
deltas become lines as they come. Tool calls arrive in fragments (a name, then pieces of the ``arguments`` string,
keyed by ``index``); they are assembled and sent, arguments parsed to objects as Ollama sends them, on one line
before the final one. The final line (``done: true``) carries ``done_reason`` and the counts, which OpenAI servers
send last (``usage`` on a chunk of its own with ``stream_options.include_usage``; llama-server adds ``timings``).
"""

from __future__ import annotations

import time
from typing import Any

from shared_ollama.errors import BackendError
from shared_ollama.protocol.upstream_openai import (
    as_object,
    counts,
    created_at,
    done_reason,
    logprobs_to_native,
    tool_calls_to_native,
)

JsonDict = dict[str, Any]


def error_message(chunk: JsonDict) -> str | None:
    """The message of an error event (``{"error": {...}}`` or ``{"error": "..."}``) sent mid-stream, else None."""
    error = chunk.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


class _StreamToNative:
    """What every streamed answer keeps until its end: the finish reason, usage, timings and creation time."""

    def __init__(self, model: str, started_ns: int) -> None:
        self.model = model
        self._started_ns = started_ns
        self._created: object = None
        self._usage: object = None
        self._timings: object = None
        self.finish_reason: str | None = None
        """The upstream's ``finish_reason`` once sent: a stream that ends without one was cut short."""

    def _take(self, chunk: JsonDict) -> JsonDict | None:
        """Note the chunk's bookkeeping; return its first choice (None when it has none, as the usage chunk)."""
        message = error_message(chunk)
        if message is not None:
            raise BackendError(f"the upstream host failed mid-stream: {message}")
        if self._created is None:
            self._created = chunk.get("created")
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self._timings = chunk["timings"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if choice is not None and choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        return choice

    def _line(self, fields: JsonDict, done: bool) -> JsonDict:
        return {"model": self.model, "created_at": created_at(self._created), **fields, "done": done}

    def _done(self, fields: JsonDict, now_ns: int | None) -> JsonDict:
        now = time.monotonic_ns() if now_ns is None else now_ns
        line = self._line(fields, True)
        line["done_reason"] = done_reason(self.finish_reason)
        return {**line, **counts(self._usage, self._timings, self._started_ns, now)}


class ChatStreamToNative(_StreamToNative):
    """``chat.completion.chunk`` events as native ``/api/chat`` stream lines."""

    def __init__(self, model: str, started_ns: int) -> None:
        super().__init__(model, started_ns)
        self._calls: dict[int, JsonDict] = {}

    def feed(self, chunk: JsonDict) -> list[JsonDict]:
        choice = self._take(chunk)
        if choice is None:
            return []
        delta = as_object(choice.get("delta"))
        for position, fragment in enumerate(delta.get("tool_calls") or []):
            self._add_call(position, fragment)
        message: JsonDict = {"role": "assistant", "content": delta.get("content") or ""}
        thinking = delta.get("reasoning_content") or delta.get("reasoning")
        if thinking:
            message["thinking"] = thinking
        logprobs = logprobs_to_native(choice.get("logprobs"))
        if not message["content"] and not thinking and not logprobs:
            return []
        line = self._line({"message": message}, False)
        if logprobs:
            line["logprobs"] = logprobs
        return [line]

    def _add_call(self, position: int, fragment: object) -> None:
        if not isinstance(fragment, dict):
            return
        index = fragment.get("index")
        call = self._calls.setdefault(index if isinstance(index, int) else position, {"name": "", "arguments": ""})
        function = as_object(fragment.get("function"))
        if function.get("name") and not call["name"]:
            call["name"] = str(function["name"])
        call["arguments"] += str(function.get("arguments") or "")

    def finish(self, now_ns: int | None = None) -> list[JsonDict]:
        """The assembled tool calls (a line of their own, when any) and the final line."""
        lines: list[JsonDict] = []
        if self._calls:
            calls = [{"function": self._calls[i]} for i in sorted(self._calls)]
            message = {"role": "assistant", "content": "", "tool_calls": tool_calls_to_native(calls)}
            lines.append(self._line({"message": message}, False))
        lines.append(self._done({"message": {"role": "assistant", "content": ""}}, now_ns))
        return lines


class GenerateStreamToNative(_StreamToNative):
    """``text_completion`` events (``/v1/completions``) or chat chunks (a generate sent as a chat) as native
    ``/api/generate`` stream lines."""

    def feed(self, chunk: JsonDict) -> list[JsonDict]:
        choice = self._take(chunk)
        if choice is None:
            return []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = str(delta.get("content") or "")
            thinking = str(delta.get("reasoning_content") or delta.get("reasoning") or "")
        else:
            text, thinking = str(choice.get("text") or ""), ""
        logprobs = logprobs_to_native(choice.get("logprobs"))
        if not text and not thinking and not logprobs:
            return []
        line = self._line({"response": text}, False)
        if thinking:
            line["thinking"] = thinking
        if logprobs:
            line["logprobs"] = logprobs
        return [line]

    def finish(self, now_ns: int | None = None) -> list[JsonDict]:
        """The final line."""
        return [self._done({"response": ""}, now_ns)]
