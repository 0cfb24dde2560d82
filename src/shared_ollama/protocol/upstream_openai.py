"""Native (Ollama) requests for an OpenAI-compatible host (vLLM, llama-server, SGLang) and its answers back. No I/O.

The gateway speaks the native API to every engine; an ``openai`` host gets the same request translated here, and its
answer is translated back to the native shape, so nothing above the host client knows the difference.

Requests. Each ``*_request`` returns the OpenAI body and the names of what the native request asked for that no
OpenAI-compatible server takes (``keep_alive``, ``options.num_ctx``, ...): the caller names them in a response header.
What would change the *meaning* of a request rather than how it is run is refused with a 400 naming it instead
(``suffix``, ``template``, ``context``). Mapped:

- ``options``: ``temperature``, ``top_p``, ``seed``, ``stop``, ``presence_penalty``, ``frequency_penalty`` keep their
  names; ``num_predict`` > 0 becomes ``max_tokens`` (a negative one is "no limit", the upstream default);
  ``top_k`` and ``min_p`` are sent as the extra top-level fields llama-server, vLLM and SGLang all accept. Every
  other option (load-time ones such as ``num_ctx``, and samplers they name differently such as ``repeat_penalty``)
  is dropped and listed.
- ``format``: ``"json"`` becomes ``response_format: {"type": "json_object"}``, a JSON schema
  ``{"type": "json_schema", "json_schema": {"name": "response", "schema": ...}}``.
- ``think``: ``true``/``false`` becomes ``chat_template_kwargs: {"enable_thinking": ...}`` (the switch vLLM and
  llama-server pass to templates that have one); a level (``low``/``medium``/``high``; ``max`` as ``high``) also
  sets ``reasoning_effort``. Reasoning in the answer (``reasoning_content`` or ``reasoning``) comes back as
  ``thinking``.
- ``logprobs``/``top_logprobs`` keep their names; ``stream`` adds ``stream_options: {"include_usage": true}``.
- Messages: ``images`` become ``image_url`` content parts with data URIs; an assistant's ``tool_calls`` get ids
  (their ``arguments`` as JSON strings) and each later ``tool`` message the id of the call it answers (its own
  ``tool_call_id``, else the first unanswered call of its ``tool_name``, else the first unanswered call).
- ``/api/generate``: with ``raw: true`` a ``/v1/completions`` prompt (no template); otherwise, as Ollama applies the
  model's template, a chat (``system`` then the prompt and its ``images`` as the user's message).
  ``is_chat_body`` tells the two apart.
- ``/api/embed``: ``input`` and ``dimensions``; vectors come back L2-normalised and cut to ``dimensions`` (as Ollama
  returns them, whatever the server did); ``truncate`` is dropped and listed (upstream servers refuse over-long
  inputs).

Answers: ``chat_answer``, ``generate_answer`` and ``embed_answer`` build the native JSON; ``upstream_openai_stream``
does the same for streams.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from shared_ollama.errors import BackendError, InvalidRequest
from shared_ollama.protocol.convert import _arguments, _tool_calls
from shared_ollama.protocol.logprobs import logprob_fields

JsonDict = dict[str, Any]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

_SAME_OPTIONS = frozenset({"temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"})
_EXTRA_OPTIONS = frozenset({"top_k", "min_p"})
"""Not OpenAI's, but accepted as top-level fields by llama-server, vLLM and SGLang alike."""
_CHAT_FIELDS = frozenset({"model", "messages", "tools", "format", "options", "stream", "think", "logprobs"})
_GENERATE_FIELDS = frozenset({"model", "prompt", "system", "raw", "images", "format", "options", "stream", "think"})
_REFUSED_GENERATE = {
    "suffix": "suffix (fill-in-the-middle) is not supported on OpenAI-compatible hosts",
    "template": "template: a per-request template cannot be applied on OpenAI-compatible hosts",
    "context": "context is not supported on OpenAI-compatible hosts; send the conversation as messages to /api/chat",
}
_CHAT_ONLY = {
    "chat_template_kwargs": "think",
    "reasoning_effort": "think",
    "logprobs": "logprobs",
    "top_logprobs": "top_logprobs",
}
"""Fields of a raw generate that only a chat body can carry: dropped and listed under their native names."""
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
_DONE_REASON = {"length": "length"}
"""OpenAI ``finish_reason`` -> native ``done_reason``; everything else (stop, tool_calls, ...) is ``stop``."""
_IMAGE_MAGIC = (("/9j/", "image/jpeg"), ("iVBORw0KGgo", "image/png"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


# ---------------------------------------------------------------- requests: native -> OpenAI


def _present(native: JsonDict, key: str) -> bool:
    """Whether ``key`` asks for something (unset, null and empty values do not)."""
    value = native.get(key)
    return value is not None and value != "" and value != [] and value != {}


def _sampling(native: JsonDict, out: JsonDict, dropped: list[str]) -> None:
    options = native.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object", param="options")
    for key, value in options.items():
        if value is None:
            continue
        if key in _SAME_OPTIONS or key in _EXTRA_OPTIONS:
            out[key] = value
        elif key == "stop":
            out["stop"] = [value] if isinstance(value, str) else list(value)
        elif key == "num_predict" and isinstance(value, int) and value != 0:
            if value > 0:
                out["max_tokens"] = value
        else:
            dropped.append(f"options.{key}")


def _common(native: JsonDict, known: frozenset[str], out: JsonDict, dropped: list[str]) -> None:
    """Sampling, stream, think and logprobs, and the names of top-level fields nothing here maps."""
    _sampling(native, out, dropped)
    out["stream"] = native.get("stream") is not False  # Ollama streams unless told not to
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    think = native.get("think")
    if think is not None:
        out["chat_template_kwargs"] = {"enable_thinking": bool(think)}
        if isinstance(think, str):
            out["reasoning_effort"] = _EFFORT.get(think, "medium")
    logprob_fields(native.get("logprobs"), native.get("top_logprobs"), out)
    ignored = known | {"logprobs", "top_logprobs"}
    dropped.extend(key for key, value in native.items() if key not in ignored and _present(native, key))


def _response_format(fmt: object) -> JsonDict | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise InvalidRequest('format must be "json" or a JSON schema object', param="format")


def image_url(image: str) -> str:
    """A native image (base64, or already a data or http(s) URL) as an ``image_url`` URL."""
    if image.startswith(("data:", "http://", "https://")):
        return image
    mime = next((kind for magic, kind in _IMAGE_MAGIC if image.startswith(magic)), "image/jpeg")
    return f"data:{mime};base64,{image}"


def _content(text: str, images: list[str]) -> str | list[JsonDict]:
    if not images:
        return text
    parts: list[JsonDict] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": image_url(image)}} for image in images]
    return parts


def _answered_call(pending: list[tuple[str, str]], name: object) -> str | None:
    """The id of the unanswered call a tool message answers (removed from ``pending``)."""
    for i, (_call_id, call_name) in enumerate(pending):
        if call_name == name:
            return pending.pop(i)[0]
    return pending.pop(0)[0] if pending else None


def messages_to_openai(messages: object, dropped: list[str]) -> list[JsonDict]:
    if not isinstance(messages, list):
        raise InvalidRequest("messages must be a list", param="messages")
    out: list[JsonDict] = []
    pending: list[tuple[str, str]] = []
    for index, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidRequest("each message must be an object", param="messages")
        item: JsonDict = {
            "role": msg.get("role") or "user",
            "content": _content(msg.get("content") or "", msg.get("images") or []),
        }
        if msg.get("tool_calls"):
            calls = _tool_calls(msg["tool_calls"], f"m{index}")
            for call in calls:
                call.pop("index", None)
            item["tool_calls"] = calls
            pending = [(call["id"], call["function"]["name"]) for call in calls]
        if item["role"] == "tool":
            call_id = msg.get("tool_call_id") or _answered_call(pending, msg.get("tool_name"))
            if call_id:
                item["tool_call_id"] = call_id
        if msg.get("thinking") and "messages.thinking" not in dropped:
            dropped.append("messages.thinking")
        out.append(item)
    return out


def chat_request(native: JsonDict) -> tuple[JsonDict, list[str]]:
    """A native ``/api/chat`` body as a ``/v1/chat/completions`` body, and the names of what was dropped."""
    dropped: list[str] = []
    out: JsonDict = {
        "model": native.get("model", ""),
        "messages": messages_to_openai(native.get("messages", []), dropped),
    }
    if native.get("tools"):
        out["tools"] = native["tools"]
    fmt = _response_format(native.get("format"))
    if fmt is not None:
        out["response_format"] = fmt
    _common(native, _CHAT_FIELDS, out, dropped)
    return out, dropped


def generate_request(native: JsonDict) -> tuple[JsonDict, list[str]]:
    """A native ``/api/generate`` body as a ``/v1/completions`` body (``raw: true``) or a ``/v1/chat/completions``
    one (``is_chat_body``), and the names of what was dropped."""
    for field, message in _REFUSED_GENERATE.items():
        if native.get(field):
            raise InvalidRequest(message, param=field)
    dropped: list[str] = []
    out: JsonDict = {"model": native.get("model", "")}
    if native.get("raw"):
        if native.get("system") or native.get("images"):
            raise InvalidRequest("raw mode does not support system or images", param="raw")
        out["prompt"] = native.get("prompt") or ""
    else:
        messages: list[JsonDict] = []
        if native.get("system"):
            messages.append({"role": "system", "content": native["system"]})
        user = {"role": "user", "content": native.get("prompt") or "", "images": native.get("images") or []}
        out["messages"] = messages_to_openai([*messages, user], dropped)
    fmt = _response_format(native.get("format"))
    if fmt is not None:
        out["response_format"] = fmt
    _common(native, _GENERATE_FIELDS | _REFUSED_GENERATE.keys(), out, dropped)
    if not is_chat_body(out):  # a raw prompt: no template to switch thinking in, no OpenAI logprobs of this shape
        for key, name in _CHAT_ONLY.items():
            if out.pop(key, None) is not None:
                dropped.append(name)
    return out, sorted(set(dropped), key=dropped.index)


def is_chat_body(body: JsonDict) -> bool:
    """Whether an OpenAI body from ``generate_request`` goes to ``/v1/chat/completions`` (else ``/v1/completions``)."""
    return "messages" in body


def embed_request(native: JsonDict) -> tuple[JsonDict, list[str]]:
    """A native ``/api/embed`` body as a ``/v1/embeddings`` body, and the names of what was dropped."""
    text = native.get("input")
    if not isinstance(text, str | list) or (isinstance(text, list) and not text):
        raise InvalidRequest("input must be a string or a non-empty list of strings", param="input")
    out: JsonDict = {"model": native.get("model", ""), "input": text, "encoding_format": "float"}
    if native.get("dimensions") is not None:
        out["dimensions"] = native["dimensions"]
    dropped = [
        key for key in native if key not in ("model", "input", "dimensions", "options") and _present(native, key)
    ]
    dropped += [f"options.{key}" for key, value in (native.get("options") or {}).items() if value is not None]
    return out, dropped


# ---------------------------------------------------------------- answers: OpenAI -> native


def done_reason(finish_reason: object) -> str:
    return _DONE_REASON.get(str(finish_reason), "stop")


def created_at(created: object) -> str:
    """OpenAI's ``created`` (Unix seconds) as Ollama's ``created_at``."""
    seconds = created if isinstance(created, int | float) and not isinstance(created, bool) else 0
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def tool_calls_to_native(calls: object) -> list[JsonDict]:
    """OpenAI ``tool_calls`` (``arguments`` a JSON string) as Ollama's (``arguments`` an object)."""
    out: list[JsonDict] = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        try:
            arguments = _arguments(function.get("arguments") or "{}")
        except InvalidRequest as exc:
            raise BackendError(
                f"the upstream host sent a tool call whose arguments are not a JSON object: {exc}"
            ) from exc
        out.append({"function": {"name": str(function.get("name") or ""), "arguments": arguments}})
    return out


def logprobs_to_native(logprobs: object) -> list[JsonDict]:
    """``choices[].logprobs`` as the native ``logprobs`` list (the same items, ``top_logprobs`` kept)."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return [dict(item) for item in content or [] if isinstance(item, dict)]


def counts(usage: object, timings: object, started_ns: int, now_ns: int) -> JsonDict:
    """The native counts and durations: tokens from ``usage`` (else llama-server's ``timings``), durations from
    ``timings`` when the server sends them."""
    used = usage if isinstance(usage, dict) else {}
    timed = timings if isinstance(timings, dict) else {}
    prompt = used.get("prompt_tokens", timed.get("prompt_n", 0))
    completion = used.get("completion_tokens", timed.get("predicted_n", 0))
    return {
        "total_duration": max(0, now_ns - started_ns),
        "load_duration": 0,
        "prompt_eval_count": int(prompt or 0),
        "prompt_eval_duration": int(float(timed.get("prompt_ms") or 0) * 1e6),
        "eval_count": int(completion or 0),
        "eval_duration": int(float(timed.get("predicted_ms") or 0) * 1e6),
    }


def as_object(value: object) -> JsonDict:
    """``value`` when it is a JSON object, else an empty one (what an upstream left out or sent malformed)."""
    return value if isinstance(value, dict) else {}


def _first_choice(answer: JsonDict) -> JsonDict:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError("the upstream host sent an answer without choices")
    return choices[0]


def _thinking(message: JsonDict) -> str:
    return str(message.get("reasoning_content") or message.get("reasoning") or "")


def chat_answer(answer: JsonDict, model: str, started_ns: int, now_ns: int | None = None) -> JsonDict:
    """A ``/v1/chat/completions`` answer as a native ``/api/chat`` answer."""
    choice = _first_choice(answer)
    message = as_object(choice.get("message"))
    native_message: JsonDict = {"role": "assistant", "content": message.get("content") or ""}
    if _thinking(message):
        native_message["thinking"] = _thinking(message)
    calls = tool_calls_to_native(message.get("tool_calls"))
    if calls:
        native_message["tool_calls"] = calls
    out: JsonDict = {
        "model": model,
        "created_at": created_at(answer.get("created")),
        "message": native_message,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
    }
    logprobs = logprobs_to_native(choice.get("logprobs"))
    if logprobs:
        out["logprobs"] = logprobs
    now = time.monotonic_ns() if now_ns is None else now_ns
    return {**out, **counts(answer.get("usage"), answer.get("timings"), started_ns, now)}


def generate_answer(answer: JsonDict, model: str, started_ns: int, now_ns: int | None = None) -> JsonDict:
    """A ``/v1/completions`` or ``/v1/chat/completions`` answer as a native ``/api/generate`` answer."""
    choice = _first_choice(answer)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else None
    out: JsonDict = {
        "model": model,
        "created_at": created_at(answer.get("created")),
        "response": (message.get("content") or "") if message is not None else str(choice.get("text") or ""),
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
    }
    if message is not None and _thinking(message):
        out["thinking"] = _thinking(message)
    logprobs = logprobs_to_native(choice.get("logprobs"))
    if logprobs:
        out["logprobs"] = logprobs
    now = time.monotonic_ns() if now_ns is None else now_ns
    return {**out, **counts(answer.get("usage"), answer.get("timings"), started_ns, now)}


def _unit(vector: list[float], dimensions: int | None) -> list[float]:
    cut = vector[:dimensions] if dimensions else vector
    norm = math.sqrt(sum(x * x for x in cut))
    return [x / norm for x in cut] if norm > 0 else list(cut)


def embed_answer(
    answer: JsonDict, model: str, started_ns: int, now_ns: int | None = None, dimensions: int | None = None
) -> JsonDict:
    """A ``/v1/embeddings`` answer as a native ``/api/embed`` answer: vectors in input order, L2-normalised (cut to
    ``dimensions`` first)."""
    data = answer.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise BackendError("the upstream host sent an embeddings answer without data")
    ordered = sorted(data, key=lambda item: int(item.get("index") or 0))
    vectors = []
    for item in ordered:
        vector = item.get("embedding")
        if not isinstance(vector, list):
            raise BackendError("the upstream host sent an embedding that is not a list of numbers")
        vectors.append(_unit([float(x) for x in vector], dimensions))
    usage = as_object(answer.get("usage"))
    now = time.monotonic_ns() if now_ns is None else now_ns
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": max(0, now - started_ns),
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
    }
