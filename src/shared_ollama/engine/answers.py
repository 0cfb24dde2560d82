"""llama.cpp's answers in Ollama's shapes: whole responses, stream chunks, thinking and log probabilities.

llama.cpp answers in OpenAI's shapes: ``message.content`` (or a completion's ``text``), the reasoning it separated
from the answer in ``reasoning_content``, tool calls with JSON-text arguments, and per token
``logprobs.content: [{id, token, bytes, logprob, top_logprobs}]``. Ollama's are ``message.content`` (``response``),
``thinking``, tool calls with object arguments, and ``logprobs: [{token, logprob, bytes, top_logprobs}]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

JsonDict = dict[str, Any]


def created_at() -> str:
    """RFC 3339 UTC timestamp with nanoseconds, as Ollama writes them."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def _tool_calls(calls: list[JsonDict] | None) -> list[JsonDict] | None:
    if not calls:
        return None
    out = []
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args) if isinstance(args, str) else args
        except orjson.JSONDecodeError:
            parsed = {"raw": args}
        out.append({"function": {"name": fn.get("name", ""), "arguments": parsed}})
    return out


def _token(item: JsonDict) -> JsonDict:
    out: JsonDict = {"token": str(item.get("token") or ""), "logprob": float(item.get("logprob") or 0.0)}
    if isinstance(item.get("bytes"), list):
        out["bytes"] = item["bytes"]
    return out


def ollama_logprobs(content: object, top: int) -> list[JsonDict]:
    """llama.cpp's ``logprobs.content`` as Ollama's ``logprobs``; the ``top`` most likely alternatives per token
    (none when ``top`` is 0: llama.cpp is always asked for at least one, since it sends nothing for zero)."""
    out = []
    for item in content if isinstance(content, list) else []:
        if not isinstance(item, dict):
            continue
        token = _token(item)
        if top > 0:
            alternatives = item.get("top_logprobs") if isinstance(item.get("top_logprobs"), list) else []
            token["top_logprobs"] = [_token(t) for t in alternatives[:top] if isinstance(t, dict)]
        out.append(token)
    return out


def _logprob_items(choice: JsonDict) -> list[JsonDict]:
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return [item for item in content if isinstance(item, dict)] if isinstance(content, list) else []


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def final_fields(result: JsonDict, finish: str | None, started_ns: int, load_ns: int) -> JsonDict:
    """The statistics Ollama puts on a final response or chunk, from llama.cpp's usage and timings.

    ``prompt_eval_count`` is the whole prompt (Ollama's meaning, what quotas and usage count);
    ``prompt_eval_cached_count`` the part of it llama.cpp reused from a slot or its prompt cache instead of
    evaluating it (``timings.cache_n``), as Ollama reports it."""
    usage = result.get("usage") or {}
    timings = result.get("timings") or {}
    details = usage.get("prompt_tokens_details") or {}
    cached = int(timings.get("cache_n") or details.get("cached_tokens") or 0)
    evaluated = int(timings.get("prompt_n") or 0)
    return {
        "done": True,
        "done_reason": _done_reason(finish),
        "total_duration": time.monotonic_ns() - started_ns,
        "load_duration": load_ns,
        "prompt_eval_count": int(usage.get("prompt_tokens") or evaluated + cached),
        "prompt_eval_cached_count": cached,
        "prompt_eval_duration": int(float(timings.get("prompt_ms") or 0) * 1e6),
        "eval_count": int(usage.get("completion_tokens") or timings.get("predicted_n") or 0),
        "eval_duration": int(float(timings.get("predicted_ms") or 0) * 1e6),
    }


def content_payload(
    kind: str,
    text: str,
    tool_calls: list[JsonDict] | None = None,
    *,
    thinking: str = "",
    logprobs: list[JsonDict] | None = None,
) -> JsonDict:
    """The answer part of a chat (``message``) or generate (``response``) body; ``logprobs`` when asked for."""
    out: JsonDict
    if kind == "chat":
        message: JsonDict = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        out = {"message": message}
    else:
        out = {"response": text}
        if thinking:
            out["thinking"] = thinking
    if logprobs:
        out["logprobs"] = logprobs
    return out


def response(
    kind: str, model: str, result: JsonDict, started_ns: int, load_ns: int, top: int | None = None
) -> JsonDict:
    """A non-streamed llama.cpp result as Ollama's chat or generate response (``top``: the request's
    ``top_logprobs`` when it asked for log probabilities, else None)."""
    choice = (result.get("choices") or [{}])[0]
    if "message" in choice:
        message = choice["message"]
        text, thinking = message.get("content") or "", message.get("reasoning_content") or ""
        calls = _tool_calls(message.get("tool_calls"))
    else:
        text, thinking, calls = choice.get("text") or "", "", None
    logprobs = ollama_logprobs(_logprob_items(choice), top) if top is not None else None
    body = content_payload(kind, text, calls, thinking=thinking, logprobs=logprobs)
    out: JsonDict = {"model": model, "created_at": created_at(), **body}
    out.update(final_fields(result, choice.get("finish_reason"), started_ns, load_ns))
    return out


@dataclass
class Piece:
    """What one llama.cpp stream chunk adds to the answer."""

    text: str = ""
    thinking: str = ""
    calls: list[JsonDict] | None = None
    logprobs: list[JsonDict] = field(default_factory=list)
    """llama.cpp's log probability items for the chunk's tokens."""
    finish: str | None = None


def piece(chunk: JsonDict) -> Piece:
    choices = chunk.get("choices") or []
    if not choices:
        return Piece()
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return Piece(
            delta.get("content") or "",
            delta.get("reasoning_content") or "",
            _tool_calls(delta.get("tool_calls")),
            _logprob_items(choice),
            choice.get("finish_reason"),
        )
    return Piece(choice.get("text") or "", "", None, _logprob_items(choice), choice.get("finish_reason"))


def chunk_text(chunk: JsonDict) -> tuple[str, list[JsonDict] | None, str | None]:
    """(text, tool calls, finish reason) of one llama.cpp stream chunk."""
    part = piece(chunk)
    return part.text, part.calls, part.finish


class Accumulator:
    """Folds llama.cpp stream chunks back into the shape of a non-streamed result (for ``response``).

    Non-streamed requests run as streams inside the engine so that a client going away can stop them.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.thinking: list[str] = []
        self.logprobs: list[JsonDict] = []
        self.finish: str | None = None
        self.last: JsonDict = {}
        self.chat = True
        self.calls: dict[int, JsonDict] = {}
        """Tool calls by index, their argument text joined from the deltas (OpenAI's streaming shape)."""

    def feed(self, chunk: JsonDict) -> str:
        """Take one chunk; returns its text."""
        part = piece(chunk)
        choices = chunk.get("choices") or []
        if choices and "text" in choices[0]:
            self.chat = False
        if part.text:
            self.parts.append(part.text)
        if part.thinking:
            self.thinking.append(part.thinking)
        self.logprobs += part.logprobs
        delta = choices[0].get("delta") if choices else None
        if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
            self._feed_calls(delta["tool_calls"])
        self.finish = part.finish or self.finish
        if chunk.get("usage") or chunk.get("timings"):
            self.last = chunk
        return part.text

    def _feed_calls(self, deltas: list[Any]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index")
            call = self.calls.setdefault(
                index if isinstance(index, int) else len(self.calls), {"function": {"name": "", "arguments": ""}}
            )
            fn = delta.get("function") or {}
            for key in ("name", "arguments"):
                if isinstance(fn.get(key), str):
                    call["function"][key] += fn[key]
            if delta.get("id"):
                call["id"] = delta["id"]

    def result(self) -> JsonDict:
        text = "".join(self.parts)
        choice: JsonDict = {"finish_reason": self.finish}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
            if self.thinking:
                choice["message"]["reasoning_content"] = "".join(self.thinking)
            if self.calls:
                choice["message"]["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        else:
            choice["text"] = text
        if self.logprobs:
            choice["logprobs"] = {"content": self.logprobs}
        return {"choices": [choice], "usage": self.last.get("usage") or {}, "timings": self.last.get("timings") or {}}
