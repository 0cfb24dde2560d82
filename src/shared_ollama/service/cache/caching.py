"""The response cache in the pipeline: which requests use it, the model digests in their keys, headers.

A request's cache mode comes from ``X-Shared-Ollama-Cache`` (any surface), a ``cache`` body field (service
API), or its tenant's default; without any, only deterministic requests (temperature 0 or a fixed seed)
use the exact cache. Keys include the model's digest from the engine's ``/api/tags`` (remembered for 30 s,
forgotten when a model is created, copied, deleted or pulled), so a re-created model never serves the old
model's answers. Hits skip admission entirely: no queue place, no engine slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from shared_ollama.backends.client import EngineApi
from shared_ollama.errors import SharedOllamaError
from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.cache.response import CACHE_HEADER, Hit, ResponseCache, decide

JsonDict = dict[str, Any]
SIMILARITY_HEADER = "X-Shared-Ollama-Cache-Similarity"
_DIGESTS_TTL = 30.0
_DIGESTS_RETRY = 5.0
_DIGESTS_WAIT = 2.0


class Caching:
    def __init__(self, cache: ResponseCache, client: EngineApi, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cache = cache
        self.client = client
        self._clock = clock
        self._digests: dict[str, str] = {}
        self._digests_until = 0.0
        self._refreshing = asyncio.Lock()

    def forget(self, model: str) -> None:
        self._digests_until = 0.0

    async def digest(self, model: str) -> str | None:
        """The model's digest, from one ``/api/tags`` shared by concurrent requests (bounded wait; a failure is
        remembered for a few seconds, so a struggling engine is not asked again by every request)."""
        if self._clock() >= self._digests_until:
            async with self._refreshing:
                if self._clock() >= self._digests_until:
                    await self._refresh()
        return self._digests.get(model) or self._digests.get(canonical_model(model))

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(_DIGESTS_WAIT):
                tags = orjson.loads(await self.client.request("GET", "/api/tags"))
        except (SharedOllamaError, orjson.JSONDecodeError, TimeoutError):
            self._digests, self._digests_until = {}, self._clock() + _DIGESTS_RETRY
            return
        self._digests = {
            str(name): str(m.get("digest", ""))
            for m in tags.get("models", [])
            if isinstance(m, dict)
            for name in {m.get("name"), m.get("model")}
            if name
        }
        self._digests_until = self._clock() + _DIGESTS_TTL

    def mode(self, ctx: RequestContext, body: JsonDict, body_mode: str | None) -> str:
        if not self.cache.config.enabled:
            return "off"
        return decide(body, ctx.cache_header, body_mode or ctx.tenant.cache)

    async def lookup(self, ctx: RequestContext, body: JsonDict, mode: str) -> Hit | None:
        hit = await self.cache.lookup(body, ctx.tenant.name, mode, await self.digest(str(body["model"])))
        if hit is None:
            ctx.headers[CACHE_HEADER] = "miss"
            ctx.record.cache = "miss"
            return None
        outcome = "semantic-hit" if hit.mode == "semantic" else "hit"
        ctx.headers[CACHE_HEADER] = outcome
        if hit.mode == "semantic":
            ctx.headers[SIMILARITY_HEADER] = f"{hit.similarity:.4f}"
        ctx.record.cache = outcome
        return hit

    async def store(self, ctx: RequestContext, body: JsonDict, mode: str, answer: bytes) -> None:
        await self.cache.store(body, ctx.tenant.name, mode, await self.digest(str(body["model"])), answer)


def engine_embedder(client: EngineApi, model: str) -> Callable[[str], Any]:
    """The semantic cache's embedding function: the engine's ``/api/embed`` with the given model."""

    async def embed(text: str) -> list[float]:
        answer = orjson.loads(await client.request("POST", "/api/embed", {"model": model, "input": text}))
        vectors = answer.get("embeddings") if isinstance(answer, dict) else None
        if not vectors:
            raise ValueError("the engine returned no embedding")
        return [float(v) for v in vectors[0]]

    return embed
