"""Pure conversions between Ollama requests/responses and llama.cpp's OpenAI-shaped requests/responses."""

from __future__ import annotations

import time
from typing import Any

import orjson

from shared_ollama.engine.store import ModelEntry

JsonDict = dict[str, Any]

# Ollama option -> llama.cpp request field.
_OPTION_MAP = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


class TranslationError(ValueError):
    """The request cannot be expressed for llama.cpp (a 400 for the client)."""


def created_at() -> str:
    """RFC 3339 UTC timestamp with nanoseconds, as Ollama writes them."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def merged_options(entry: ModelEntry, options: JsonDict | None) -> JsonDict:
    """The model's own parameters (from its manifest) overridden by the request's options."""
    merged = dict(entry.parameters)
    merged.update(options or {})
    return merged


def sampling(options: JsonDict, fmt: str | JsonDict | None) -> JsonDict:
    out: JsonDict = {}
    for src, dst in _OPTION_MAP.items():
        if options.get(src) is not None:
            out[dst] = options[src]
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0:
        out["max_tokens"] = num_predict
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    elif fmt not in (None, ""):
        raise TranslationError('format must be "json" or a JSON schema object')
    return out


def _message(msg: JsonDict, entry: ModelEntry) -> JsonDict:
    role = str(msg.get("role", ""))
    if role not in ("system", "user", "assistant", "tool"):
        raise TranslationError(f"invalid message role {role!r}")
    if msg.get("images") and entry.projector is None:
        raise TranslationError(f"model '{entry.name}' does not support images (it has no vision capability)")
    out: JsonDict = {"role": role, "content": msg.get("content") or ""}
    if msg.get("images"):
        parts: list[JsonDict] = [{"type": "text", "text": out["content"]}]
        parts += [{"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{img}"}} for img in msg["images"]]
        out["content"] = parts
    if msg.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {
                    "name": call.get("function", {}).get("name", ""),
                    "arguments": orjson.dumps(call.get("function", {}).get("arguments", {})).decode(),
                },
            }
            for i, call in enumerate(msg["tool_calls"])
        ]
    if role == "tool" and msg.get("tool_name"):
        out["name"] = msg["tool_name"]
    return out


def chat_request(req: JsonDict, entry: ModelEntry) -> JsonDict:
    messages = [_message(m, entry) for m in req.get("messages") or []]
    history = [_message(m, entry) for m in entry.messages]
    if entry.system and not any(m["role"] == "system" for m in messages):
        history.insert(0, {"role": "system", "content": entry.system})
    out = sampling(merged_options(entry, req.get("options")), req.get("format"))
    out["messages"] = history + messages
    if req.get("tools"):
        out["tools"] = req["tools"]
    return out


def generate_request(req: JsonDict, entry: ModelEntry) -> tuple[str, JsonDict]:
    """(llama.cpp method, request): raw prompts go to completions, others through the chat template."""
    out = sampling(merged_options(entry, req.get("options")), req.get("format"))
    if req.get("images") and entry.projector is None:
        raise TranslationError(f"model '{entry.name}' does not support images (it has no vision capability)")
    if req.get("raw"):
        out["prompt"] = req.get("prompt") or ""
        return "handle_completions", out
    messages: list[JsonDict] = []
    system = req.get("system") or entry.system
    if system:
        messages.append({"role": "system", "content": system})
    user: JsonDict = {"role": "user", "content": req.get("prompt") or "", "images": req.get("images")}
    messages.append(_message(user, entry))
    out["messages"] = messages
    return "handle_chat_completions", out


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


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def final_fields(result: JsonDict, finish: str | None, started_ns: int, load_ns: int) -> JsonDict:
    """The statistics Ollama puts on a final response or chunk, from llama.cpp's usage and timings."""
    usage = result.get("usage") or {}
    timings = result.get("timings") or {}
    return {
        "done": True,
        "done_reason": _done_reason(finish),
        "total_duration": time.monotonic_ns() - started_ns,
        "load_duration": load_ns,
        "prompt_eval_count": int(usage.get("prompt_tokens") or timings.get("prompt_n") or 0),
        "prompt_eval_duration": int(float(timings.get("prompt_ms") or 0) * 1e6),
        "eval_count": int(usage.get("completion_tokens") or timings.get("predicted_n") or 0),
        "eval_duration": int(float(timings.get("predicted_ms") or 0) * 1e6),
    }


def body_key(kind: str) -> str:
    return "message" if kind == "chat" else "response"


def content_payload(kind: str, text: str, tool_calls: list[JsonDict] | None = None) -> JsonDict:
    if kind == "chat":
        message: JsonDict = {"role": "assistant", "content": text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"message": message}
    return {"response": text}


def response(kind: str, model: str, result: JsonDict, started_ns: int, load_ns: int) -> JsonDict:
    """A non-streamed llama.cpp result as Ollama's chat or generate response."""
    choice = (result.get("choices") or [{}])[0]
    if "message" in choice:
        text = choice["message"].get("content") or ""
        calls = _tool_calls(choice["message"].get("tool_calls"))
    else:
        text, calls = choice.get("text") or "", None
    out: JsonDict = {"model": model, "created_at": created_at(), **content_payload(kind, text, calls)}
    out.update(final_fields(result, choice.get("finish_reason"), started_ns, load_ns))
    return out


def chunk_text(chunk: JsonDict) -> tuple[str, list[JsonDict] | None, str | None]:
    """(text, tool calls, finish reason) of one llama.cpp stream chunk."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", None, None
    choice = choices[0]
    delta = choice.get("delta")
    if delta is not None:
        return delta.get("content") or "", _tool_calls(delta.get("tool_calls")), choice.get("finish_reason")
    return choice.get("text") or "", None, choice.get("finish_reason")
