"""The gateway pipeline: one path from every protocol adapter to the engine.

Adapters hand it native (Ollama-shaped) request bodies that are already validated; it resolves the model,
calls the engine through the client and hands back raw bytes (non-streamed) or raw NDJSON lines (streamed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.supervisor import EngineSupervisor
from shared_ollama.errors import InvalidRequest
from shared_ollama.service.context import RequestContext
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]


class Gateway:
    def __init__(self, settings: Settings, client: EngineClient, supervisor: EngineSupervisor) -> None:
        self.settings = settings
        self.client = client
        self.supervisor = supervisor

    def resolve_model(self, body: JsonDict, *, default: str | None = None) -> JsonDict:
        """Fill in the model: the adapter's default when the surface has one, else a clear 400."""
        if not body.get("model"):
            if default is None:
                raise InvalidRequest("model is required", param="model")
            body["model"] = default
        return body

    async def call(self, ctx: RequestContext, path: str, body: JsonDict) -> bytes:
        """A non-streamed engine call (chat, generate, embed, show ...): the engine's raw JSON body."""
        return await self.client.request("POST", path, body)

    @asynccontextmanager
    async def stream(self, ctx: RequestContext, path: str, body: JsonDict) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed engine call; yields raw NDJSON lines. Leaving the context cancels the generation."""
        async with self.client.stream(path, body) as lines:
            yield lines

    async def get(self, path: str) -> bytes:
        return await self.client.request("GET", path)
