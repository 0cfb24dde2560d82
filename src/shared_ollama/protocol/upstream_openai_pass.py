"""An OpenAI client's chat completion answered by an ``openai`` host as the host wrote it (pass-through). No I/O.

Such a request runs through the gateway as every other does (its native body, the tenant's policy, the image
pipeline, admission, the cache, accounting from the native lines): the host client still turns the host's answer
into native for the pipeline, and, when the request carries a ``PassThrough``, also keeps the host's own answer
(not streamed) or chunks (streamed) here. The OpenAI surface then sends those instead of translating the native
answer back, so the host's ids and fields (``system_fingerprint``, usage details, llama-server's ``timings``,
reasoning fields, logprobs) reach the client unchanged — except ``model``, which names the model as the client
asked for it (a host may serve it under another spelling). The usage the gateway asks every streaming host for
is left out of the chunks unless the client asked for it too (``stream_options.include_usage``).

Not used (the native answer is translated as before) for a cache hit, a request that ran on an ``ollama`` host,
and a request whose answer the surface reshapes itself (a forced tool call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

JsonDict = dict[str, Any]


@dataclass(slots=True)
class PassThrough:
    """The host's own answer to one OpenAI chat completion, kept while the pipeline runs."""

    model: str
    """The model as the client named it: the answer's ``model``."""
    include_usage: bool = False
    """Whether the client asked for the usage chunk of a stream."""
    used: bool = False
    """Whether an ``openai`` host answered (then ``answer`` or the chunks hold its own answer)."""
    answer: JsonDict | None = None
    _chunks: list[JsonDict] = field(default_factory=list)

    def keep_answer(self, answer: JsonDict) -> None:
        self.answer = answer
        self.used = True

    def keep_chunk(self, chunk: JsonDict) -> None:
        """One streamed chunk as the host sent it (before the native line it gave, if any, is sent on)."""
        self.used = True
        if not self.include_usage:
            choices = chunk.get("choices")
            if not choices and "usage" in chunk:
                return  # the usage chunk the gateway asked for, for its own accounting
            chunk.pop("usage", None)
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """The non-streamed answer to send."""
        answer = dict(self.answer or {})
        if "model" in answer:
            answer["model"] = self.model
        return orjson.dumps(answer)

    def frames(self) -> bytes:
        """The chunks kept since the last call, as SSE events (empty when there are none)."""
        if not self._chunks:
            return b""
        out = []
        for chunk in self._chunks:
            if "model" in chunk:
                chunk["model"] = self.model
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        self._chunks.clear()
        return b"".join(out)
