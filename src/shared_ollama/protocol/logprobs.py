"""Log probabilities between OpenAI's chat shapes and the native (Ollama) ones (pure).

Native: ``logprobs: true`` and ``top_logprobs: N`` on the request; ``logprobs: [{token, logprob, bytes,
top_logprobs: [...]}]`` on the answer and on each stream chunk. OpenAI: the same two request fields, and
``choices[].logprobs.content`` with the same items (``top_logprobs`` always a list, ``bytes`` possibly null).
"""

from __future__ import annotations

from typing import Any

from shared_ollama.errors import InvalidRequest

JsonDict = dict[str, Any]


def logprob_fields(logprobs: bool | None, top_logprobs: int | None, body: JsonDict) -> None:
    """Put the native request fields on ``body``; ``top_logprobs`` without ``logprobs`` is a 400 naming it."""
    if top_logprobs and not logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    if logprobs:
        body["logprobs"] = True
        if top_logprobs:
            body["top_logprobs"] = top_logprobs


def _token_logprob(item: JsonDict) -> JsonDict:
    return {"token": str(item.get("token") or ""), "logprob": item.get("logprob", 0.0), "bytes": item.get("bytes")}


def chat_logprobs(native: JsonDict) -> JsonDict | None:
    """A native answer's (or chunk's) ``logprobs`` as OpenAI's ``choices[].logprobs``; None without them."""
    items = native.get("logprobs")
    if not isinstance(items, list) or not items:
        return None
    content = []
    for item in items:
        if isinstance(item, dict):
            alternatives = item.get("top_logprobs") if isinstance(item.get("top_logprobs"), list) else []
            top = [_token_logprob(t) for t in alternatives if isinstance(t, dict)]
            content.append({**_token_logprob(item), "top_logprobs": top})
    return {"content": content, "refusal": None}
