"""Pure converters between the OpenAI shapes and the native (Ollama) shapes.

OpenAI support is translation over the native core: requests become native requests, native responses and
stream chunks become OpenAI responses and chunks. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import struct
from datetime import datetime
from typing import Any

import orjson

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.logprobs import chat_logprobs, logprob_fields
from shared_ollama.protocol.openai import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
    _Sampling,
    _Wire,
)
from shared_ollama.protocol.tool_choice import ForcedCall, call_schema, forced_call, with_instructions

JsonDict = dict[str, Any]

_FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


# ---------------------------------------------------------------- requests: OpenAI -> native


def _options(req: _Sampling, max_tokens: int | None) -> JsonDict:
    options: JsonDict = {}
    for src, dst in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ):
        value = getattr(req, src)
        if value is not None:
            options[dst] = value
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    if req.stop is not None:
        options["stop"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    return options


_NEUTRAL: dict[str, tuple[object, ...]] = {
    "logprobs": (False,),
    "parallel_tool_calls": (True,),
    "store": (False,),
    "service_tier": ("auto", "default"),
}
"""Fields this service does not implement, accepted only with the value that asks for nothing (OpenAI's default)."""


def refuse_unsupported(req: _Wire) -> None:
    """A 400 naming the first field sent that nothing here honours (never silently ignored); unset or empty
    values, and the values in ``_NEUTRAL``, ask for nothing and pass."""
    for name, value in (req.model_extra or {}).items():
        if value is None or value == [] or value == {} or value in _NEUTRAL.get(name, ()):
            continue
        raise InvalidRequest(f"'{name}' is not supported by this service", param=name)


def _message(msg: ChatMessage) -> JsonDict:
    role = "system" if msg.role == "developer" else msg.role
    out: JsonDict = {"role": role}
    images: list[str] = []
    if isinstance(msg.content, list):
        texts: list[str] = []
        for part in msg.content:
            if part.type == "text":
                texts.append(part.text or "")
            elif part.type == "image_url" and part.image_url is not None:
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                images.append(url)  # data URLs and http(s) URLs: the image pipeline decodes, fetches or refuses
            else:
                raise InvalidRequest(f"unsupported content part type '{part.type}'")
        out["content"] = "\n".join(texts)
    else:
        out["content"] = msg.content or ""
    if images:
        out["images"] = images
    if msg.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": call.function.name, "arguments": _arguments(call.function.arguments)}}
            for call in msg.tool_calls
        ]
    if msg.role == "tool" and msg.name:
        out["tool_name"] = msg.name
    return out


def _arguments(arguments: str | JsonDict) -> JsonDict:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("tool call arguments must be a JSON object string") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest("tool call arguments must be a JSON object")
    return parsed


def _format(fmt: ResponseFormat | None) -> str | JsonDict | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "json"
    schema = (fmt.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs a 'json_schema.schema' object")
    return schema


def _tools(req: ChatCompletionRequest) -> list[JsonDict] | None:
    """The tools the model may call on its own under ``tool_choice``: ``auto`` (the default) all of them; ``none``
    none; a forced call (``required``, a named function) none either: its ``format`` makes the call
    (``tool_choice.py``)."""
    return req.tools if req.tool_choice in (None, "auto") else None


def forced_tool_call(req: ChatCompletionRequest) -> ForcedCall | None:
    """The call ``tool_choice`` forces (``required`` or a named function), or None; 400 naming ``tool_choice``
    when it cannot be honoured."""
    return forced_call(req.tools, req.tool_choice)


def chat_request_to_native(req: ChatCompletionRequest) -> JsonDict:
    refuse_unsupported(req)
    forced = forced_tool_call(req)
    body: JsonDict = {
        "model": req.model,
        "messages": [_message(m) for m in req.messages],
        "stream": req.stream,
    }
    options = _options(req, req.max_completion_tokens or req.max_tokens)
    if options:
        body["options"] = options
    fmt = _format(req.response_format)
    if fmt is not None and forced is not None:
        raise InvalidRequest(
            "a forced tool call (tool_choice) cannot be combined with response_format", param="tool_choice"
        )
    if fmt is not None:
        body["format"] = fmt
    if forced is not None:
        body["format"] = call_schema(forced)
        body["messages"] = with_instructions(body["messages"], forced)
    tools = _tools(req)
    if tools:
        body["tools"] = tools
    logprob_fields(req.logprobs, req.top_logprobs, body)
    return body


def completion_request_to_native(req: CompletionRequest) -> JsonDict:
    """The native generate request; ``echo`` is applied to the answer by ``completion_response_from_native``."""
    refuse_unsupported(req)
    prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
    body: JsonDict = {"model": req.model, "prompt": prompt, "stream": req.stream}
    if req.suffix:
        body["suffix"] = req.suffix
    options = _options(req, req.max_tokens)
    if options:
        body["options"] = options
    return body


def embedding_request_to_native(req: EmbeddingRequest) -> JsonDict:
    refuse_unsupported(req)
    body: JsonDict = {"model": req.model, "input": req.input}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    return body


# ---------------------------------------------------------------- responses: native -> OpenAI


def _usage(native: JsonDict) -> JsonDict:
    prompt = int(native.get("prompt_eval_count") or 0)
    completion = int(native.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls(calls: list[JsonDict], request_id: str) -> list[JsonDict]:
    return [
        {
            "id": f"call_{request_id[:12]}_{i}",
            "index": i,
            "type": "function",
            "function": {
                "name": call.get("function", {}).get("name", ""),
                "arguments": orjson.dumps(call.get("function", {}).get("arguments", {})).decode(),
            },
        }
        for i, call in enumerate(calls)
    ]


def finish_reason(native: JsonDict) -> str:
    if native.get("message", {}).get("tool_calls"):
        return "tool_calls"
    return _FINISH.get(str(native.get("done_reason") or "stop"), "stop")


def chat_response_from_native(native: JsonDict, *, request_id: str, created: int) -> JsonDict:
    message = native.get("message") or {}
    out_message: JsonDict = {"role": "assistant", "content": message.get("content", "")}
    if message.get("tool_calls"):
        out_message["tool_calls"] = _tool_calls(message["tool_calls"], request_id)
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": native.get("model", ""),
        "system_fingerprint": "fp_shared_ollama",
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "logprobs": chat_logprobs(native),
                "finish_reason": finish_reason(native),
            }
        ],
        "usage": _usage(native),
    }


def chat_chunk_from_native(
    native: JsonDict, *, request_id: str, created: int, first: bool, include_usage: bool
) -> list[JsonDict]:
    """One native stream chunk as zero or more OpenAI ``chat.completion.chunk`` objects."""
    base = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": native.get("model", ""),
        "system_fingerprint": "fp_shared_ollama",
    }
    message = native.get("message") or {}
    delta: JsonDict = {"role": "assistant"} if first else {}
    if message.get("content"):
        delta["content"] = message["content"]
    if message.get("tool_calls"):
        delta["tool_calls"] = _tool_calls(message["tool_calls"], request_id)
    out: list[JsonDict] = []
    done = bool(native.get("done"))
    logprobs = chat_logprobs(native)
    if delta or not done:
        if first and "content" not in delta:
            delta["content"] = ""
        choice: JsonDict = {"index": 0, "delta": delta, "finish_reason": None}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        out.append({**base, "choices": [choice]})
    if done:
        out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason(native)}]})
        if include_usage:
            out.append({**base, "choices": [], "usage": _usage(native)})
    return out


def completion_response_from_native(native: JsonDict, *, request_id: str, created: int, echo: str = "") -> JsonDict:
    """``echo``: the prompt, put before the answer's text (OpenAI's ``echo: true``)."""
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": native.get("model", ""),
        "system_fingerprint": "fp_shared_ollama",
        "choices": [
            {
                "index": 0,
                "text": echo + native.get("response", ""),
                "logprobs": None,
                "finish_reason": finish_reason(native),
            }
        ],
        "usage": _usage(native),
    }


def completion_chunk_from_native(
    native: JsonDict, *, request_id: str, created: int, include_usage: bool
) -> list[JsonDict]:
    base = {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": created,
        "model": native.get("model", ""),
        "system_fingerprint": "fp_shared_ollama",
    }
    done = bool(native.get("done"))
    out = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "text": native.get("response", ""),
                    "logprobs": None,
                    "finish_reason": finish_reason(native) if done else None,
                }
            ],
        }
    ]
    if done and include_usage:
        out.append({**base, "choices": [], "usage": _usage(native)})
    return out


def _b64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embedding_response_from_native(native: JsonDict, *, encoding: str) -> JsonDict:
    vectors: list[list[float]] = native.get("embeddings") or []
    data = [
        {"object": "embedding", "index": i, "embedding": _b64_floats(v) if encoding == "base64" else v}
        for i, v in enumerate(vectors)
    ]
    tokens = int(native.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "data": data,
        "model": native.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _unix(timestamp: str | None) -> int:
    if not timestamp:
        return 0
    try:
        # Ollama timestamps carry nanoseconds; fromisoformat takes at most microseconds.
        head, dot, tail = timestamp.partition(".")
        if dot:
            digits = "".join(ch for ch in tail if ch.isdigit())
            zone = tail[len(digits) :]
            timestamp = f"{head}.{digits[:6]}{zone}"
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def model_from_tag(tag: JsonDict) -> JsonDict:
    return {
        "id": tag.get("name") or tag.get("model", ""),
        "object": "model",
        "created": _unix(tag.get("modified_at")),
        "owned_by": "library",
    }


def models_from_tags(tags: JsonDict) -> JsonDict:
    return {"object": "list", "data": [model_from_tag(t) for t in tags.get("models", [])]}
