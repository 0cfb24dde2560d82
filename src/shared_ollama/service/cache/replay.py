"""Replaying a cached answer as an Ollama stream, and turning a finished stream into a cacheable answer."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import orjson

JsonDict = dict[str, Any]


def _pieces(text: str, count: int) -> list[str]:
    """``text`` in at most ``count`` pieces cut after whitespace; their concatenation is ``text``."""
    words = re.findall(r"\S*\s*", text)[:-1] or [text]
    per = max(1, math.ceil(len(words) / count))
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


def replay_ndjson(entry_json: JsonDict, kind: str, pieces: int = 4) -> list[bytes]:
    """An Ollama NDJSON stream (lines ending in a newline) from a cached final answer (``kind`` ``chat`` or
    ``generate``): its thinking and text in a few chunks each, tool calls in one, then a ``done: true`` chunk
    with the counts and durations."""
    chat = kind == "chat"
    source = entry_json.get("message") if chat else entry_json
    source = source if isinstance(source, dict) else {}
    role = source.get("role", "assistant")
    head = {"model": entry_json.get("model"), "created_at": entry_json.get("created_at")}

    def chunk(**fields: object) -> JsonDict:
        body = {"message": {"role": role, "content": "", **fields}} if chat else {"response": "", **fields}
        return {**head, **body, "done": False}

    chunks = []
    for field in ("thinking", "content" if chat else "response"):
        text = source.get(field)
        if isinstance(text, str) and text:
            chunks += [chunk(**{field: p}) for p in _pieces(text, pieces)]
    if chat and source.get("tool_calls"):
        chunks.append(chunk(tool_calls=source["tool_calls"]))
    rest = {k: v for k, v in entry_json.items() if k not in ("model", "created_at", "message", "response", "thinking")}
    chunks.append({**chunk(), **rest, "done": True})
    return [orjson.dumps(c) + b"\n" for c in chunks]


def aggregate_ndjson(lines: Iterable[bytes], kind: str) -> bytes | None:
    """The non-streamed equivalent of a streamed answer (to cache it); None without a final ``done`` line or
    with an error line. Log probabilities (per chunk in a stream) are gathered in order, as a non-streamed answer
    has them; a replay sends them on its final chunk."""
    chat = kind == "chat"
    texts: dict[str, list[str]] = {"thinking": [], "content" if chat else "response": []}
    calls: list[object] = []
    logprobs: list[object] = []
    final: JsonDict | None = None
    role = "assistant"
    for line in lines:
        if not line.strip():
            continue
        chunk = orjson.loads(line)
        if not isinstance(chunk, dict) or chunk.get("error"):
            return None
        source = chunk.get("message") if chat else chunk
        if isinstance(source, dict):
            role = source.get("role") or role
            for field, parts in texts.items():
                if isinstance(source.get(field), str):
                    parts.append(source[field])
            calls.extend(source.get("tool_calls") or [])
        if isinstance(chunk.get("logprobs"), list):
            logprobs.extend(chunk["logprobs"])
        if chunk.get("done") is True:
            final = chunk
    if final is None:
        return None
    if logprobs:
        final = {**final, "logprobs": logprobs}
    joined = {field: "".join(parts) for field, parts in texts.items() if parts or field != "thinking"}
    if chat:
        return orjson.dumps({**final, "message": {"role": role, **joined, **({"tool_calls": calls} if calls else {})}})
    return orjson.dumps({**final, **joined})
