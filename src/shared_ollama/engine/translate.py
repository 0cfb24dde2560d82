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
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "num_keep": "n_keep",
}
_INT_OPTIONS = frozenset(
    {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "mirostat", "num_ctx", "num_batch", "num_thread"}
)
_FLOAT_OPTIONS = frozenset(
    {
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat_tau",
        "mirostat_eta",
    }
)


class TranslationError(ValueError):
    """The request cannot be expressed for llama.cpp (a 400 for the client)."""


def created_at() -> str:
    """RFC 3339 UTC timestamp with nanoseconds, as Ollama writes them."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_options(options: Any) -> JsonDict:
    """``options`` as a dict whose known keys have Ollama's types (floats are accepted for integers)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS and not _is_number(value):
            raise TranslationError(f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and not _is_number(value):
            raise TranslationError(f'option "{key}" must be of type float32')
        if key == "stop" and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise TranslationError('option "stop" must be of an array of strings')
    return options


def _check_images(images: Any) -> None:
    if images is not None and not (isinstance(images, list) and all(isinstance(i, str) for i in images)):
        raise TranslationError("images must be a list of base64 strings")


def _refuse_unsupported_generate(body: JsonDict) -> None:
    """Ollama fields this engine cannot honour: refused by name, never silently dropped."""
    if body.get("suffix"):
        raise TranslationError(f'"{body.get("model")}" does not support insert (suffix)')
    if body.get("template"):
        raise TranslationError(
            "template: this engine cannot apply a per-request template; create a model with a TEMPLATE instead"
        )
    if body.get("context"):
        raise TranslationError(
            "context is not supported by this engine; send the conversation as messages to /api/chat"
        )


def check_request(kind: str, body: JsonDict) -> None:
    """Reject shapes a chat or generate request cannot have (400s), before anything is loaded or run."""
    check_options(body.get("options"))
    fmt = body.get("format")
    if fmt is not None and not isinstance(fmt, str | dict):
        raise TranslationError('format must be "json" or a JSON schema object')
    if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
        raise TranslationError("stream must be a boolean")
    if kind == "generate":
        for key in ("prompt", "system", "suffix", "template"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise TranslationError(f"{key} must be a string")
        _check_images(body.get("images"))
        _refuse_unsupported_generate(body)
        return
    messages = body.get("messages")
    if messages is not None and not isinstance(messages, list):
        raise TranslationError("messages must be a list")
    for message in messages or []:
        if not isinstance(message, dict):
            raise TranslationError("each message must be an object")
        if message.get("content") is not None and not isinstance(message["content"], str):
            raise TranslationError("message content must be a string")
        _check_images(message.get("images"))
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls)
        ):
            raise TranslationError("tool_calls must be a list of {function: {name, arguments}} objects")
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise TranslationError("tools must be a list of objects")


def merged_options(entry: ModelEntry, options: JsonDict | None) -> JsonDict:
    """The model's own parameters (from its manifest) overridden by the request's options."""
    merged = dict(entry.parameters)
    merged.update(options or {})
    return merged


def sampling(options: JsonDict, fmt: str | JsonDict | None) -> JsonDict:
    out: JsonDict = {}
    for src, dst in _OPTION_MAP.items():
        value = options.get(src)
        if value is not None:
            out[dst] = int(value) if src in _INT_OPTIONS and _is_number(value) else value
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    num_predict = options.get("num_predict")
    if _is_number(num_predict) and num_predict >= 0:
        out["max_tokens"] = int(num_predict)
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt}}
    elif fmt not in (None, ""):
        raise TranslationError('format must be "json" or a JSON schema object')
    return out


_IMAGE_TYPES = (("iVBORw0KGgo", "png"), ("/9j/", "jpeg"), ("R0lGOD", "gif"), ("UklGR", "webp"), ("Qk", "bmp"))
"""Base64 prefixes of the image formats' magic bytes (llama.cpp decodes the bytes; the type is informative)."""


def _data_url(image: str) -> str:
    """An Ollama image (bare base64) as the data URL llama.cpp's chat handler expects in an ``image_url`` part."""
    kind = next((k for prefix, k in _IMAGE_TYPES if image.startswith(prefix)), "jpeg")
    return f"data:image/{kind};base64,{image}"


def _message(msg: JsonDict, entry: ModelEntry) -> JsonDict:
    role = str(msg.get("role", ""))
    if role not in ("system", "user", "assistant", "tool"):
        raise TranslationError(f"invalid message role {role!r}")
    if msg.get("images") and entry.projector is None:
        raise TranslationError(f"model '{entry.name}' does not support images (it has no vision capability)")
    out: JsonDict = {"role": role, "content": msg.get("content") or ""}
    if msg.get("images"):
        parts: list[JsonDict] = [{"type": "text", "text": out["content"]}]
        parts += [{"type": "image_url", "image_url": {"url": _data_url(img)}} for img in msg["images"]]
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
    messages += [_message(m, entry) for m in entry.messages]  # the model's MESSAGE history, as Ollama does
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


class Accumulator:
    """Folds llama.cpp stream chunks back into the shape of a non-streamed result (for ``response``).

    Non-streamed requests run as streams inside the engine so that a client going away can stop them.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: str | None = None
        self.last: JsonDict = {}
        self.chat = True
        self.calls: dict[int, JsonDict] = {}
        """Tool calls by index, their argument text joined from the deltas (OpenAI's streaming shape)."""

    def feed(self, chunk: JsonDict) -> str:
        """Take one chunk; returns its text."""
        text, _, reason = chunk_text(chunk)
        choices = chunk.get("choices") or []
        if choices and "text" in choices[0]:
            self.chat = False
        if text:
            self.parts.append(text)
        delta = choices[0].get("delta") if choices else None
        if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
            self._feed_calls(delta["tool_calls"])
        self.finish = reason or self.finish
        if chunk.get("usage") or chunk.get("timings"):
            self.last = chunk
        return text

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
            if self.calls:
                choice["message"]["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        else:
            choice["text"] = text
        return {"choices": [choice], "usage": self.last.get("usage") or {}, "timings": self.last.get("timings") or {}}
