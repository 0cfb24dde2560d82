"""The gateway pipeline: one path from every protocol adapter to the engine.

Adapters hand it native (Ollama-shaped) request bodies that are already validated; it resolves the model,
checks the prompt size, admits the request (tenant cap, fair queue, engine slot, deadline), calls the engine
through the client and hands back raw bytes (non-streamed) or raw NDJSON lines (streamed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.supervisor import EngineSupervisor
from shared_ollama.errors import InvalidRequest, RequestTimeout
from shared_ollama.service.admission import Admission, Admitted
from shared_ollama.service.context import RequestContext
from shared_ollama.service.prompts import check_prompt_size, request_kind
from shared_ollama.service.tenants import Tenants
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
_PROMPTED = ("/api/chat", "/api/generate")


class Gateway:
    def __init__(
        self,
        settings: Settings,
        client: EngineClient,
        supervisor: EngineSupervisor,
        tenants: Tenants,
        admission: Admission,
    ) -> None:
        self.settings = settings
        self.client = client
        self.supervisor = supervisor
        self.tenants = tenants
        self.admission = admission

    def resolve_model(self, body: JsonDict, *, default: str | None = None) -> JsonDict:
        """Fill in the model: the adapter's default when the surface has one, else a clear 400."""
        if not body.get("model"):
            if default is None:
                raise InvalidRequest("model is required", param="model")
            body["model"] = default
        return body

    async def _check(self, ctx: RequestContext, path: str, body: JsonDict) -> None:
        """What can be refused before admission: a full queue (free to check), then the prompt's size."""
        self.admission.scheduler.check_room()
        if path in _PROMPTED:
            await check_prompt_size(self.client, body, ctx.tenant.limits.max_prompt_tokens)

    async def call(self, ctx: RequestContext, path: str, body: JsonDict) -> bytes:
        """A non-streamed engine call (chat, generate, embed ...): the engine's raw JSON body."""
        await self._check(ctx, path, body)
        async with self.admission.admit(ctx, str(body["model"]), request_kind(body)) as admitted:
            try:
                async with asyncio.timeout(admitted.remaining()):
                    return await self.client.request("POST", path, body)
            except TimeoutError:
                raise _overtime(admitted) from None

    @asynccontextmanager
    async def stream(self, ctx: RequestContext, path: str, body: JsonDict) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed engine call; yields raw NDJSON lines. Leaving the context cancels the generation."""
        await self._check(ctx, path, body)
        async with self.admission.admit(ctx, str(body["model"]), request_kind(body)) as admitted:
            try:
                async with asyncio.timeout(admitted.remaining()):
                    opened = self.client.stream(path, body)
                    lines = await opened.__aenter__()
            except TimeoutError:
                raise _overtime(admitted) from None
            try:
                yield _within(lines, admitted)
            finally:
                await opened.__aexit__(None, None, None)

    async def get(self, path: str) -> bytes:
        return await self.client.request("GET", path)

    async def inspect(self, path: str, body: JsonDict) -> bytes:
        """An engine call that takes no slot (model details, load and unload)."""
        return await self.client.request("POST", path, body)


def _overtime(admitted: Admitted) -> RequestTimeout:
    seconds = admitted.deadline - admitted.ticket.enqueued_at
    return RequestTimeout(f"the request did not finish within its {seconds:.3g} s deadline")


async def _within(lines: AsyncIterator[bytes], admitted: Admitted) -> AsyncIterator[bytes]:
    """The engine's lines until the request's deadline; past it, a ``request_timeout`` ends the stream."""
    iterator = aiter(lines)
    while True:
        try:
            async with asyncio.timeout(admitted.remaining()):
                line = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _overtime(admitted) from None
        yield line
