"""The gateway pipeline: one path from every protocol adapter to the engine.

Adapters hand it native (Ollama-shaped) request bodies that are already validated; it resolves the model,
checks the prompt size, admits the request (tenant cap, fair queue, engine slot, deadline), calls the engine
through the client and hands back raw bytes (non-streamed) or raw NDJSON lines (streamed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import orjson

from shared_ollama.backends.client import EngineApi
from shared_ollama.backends.supervisor import EngineState, EngineSupervisor
from shared_ollama.errors import BackendError, BackendUnavailable, InvalidRequest, RequestTimeout
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.engine_policy import PINNED_HEADER, POLICY_HEADER, EnginePolicy, check_model
from shared_ollama.service.admission.gate import Admission, Admitted
from shared_ollama.service.admission.placement import LOCAL_HOST
from shared_ollama.service.admission.prompts import check_prompt_size, request_kind
from shared_ollama.service.admission.tenants import Tenants
from shared_ollama.service.answering import account, overtime, replay, within
from shared_ollama.service.cache.caching import Caching
from shared_ollama.service.cache.response import Hit, aggregate_ndjson, path_kind
from shared_ollama.service.fleet.fleet import Fleet, FleetEngines
from shared_ollama.service.fleet.routing import is_unload, targeted
from shared_ollama.service.images.vision import IMAGES_HEADER, Compression, Vision, summary
from shared_ollama.service.models.loaded import LoadedModels
from shared_ollama.service.models.memory import MemoryManager
from shared_ollama.service.models.ops import ModelOps
from shared_ollama.service.models.policy import ModelPolicy
from shared_ollama.service.models.profiles import Selection
from shared_ollama.service.observability.metrics import HostFigures, LiveState
from shared_ollama.service.quotas.quotas import Quotas
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]
_PROMPTED = ("/api/chat", "/api/generate")


class Gateway:
    """Built complete by the composition root; nothing is assigned to it from outside afterwards."""

    def __init__(
        self,
        settings: Settings,
        client: EngineApi,
        supervisor: EngineSupervisor | FleetEngines,
        tenants: Tenants,
        admission: Admission,
        vision: Vision,
        *,
        models: ModelOps,
        policy: ModelPolicy,
        loaded: LoadedModels,
        memory: MemoryManager,
        caching: Caching,
        engine_policy: EnginePolicy,
        quotas: Quotas,
        fleet: Fleet | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.supervisor = supervisor
        self.tenants = tenants
        self.admission = admission
        self.vision = vision
        self.models = models
        self.policy = policy
        self.loaded = loaded
        """The engine's loaded models as ``/api/ps`` last described them."""
        self.memory = memory
        self.caching = caching
        """The response cache, when enabled."""
        self.engine_policy = engine_policy
        """What a tenant's request may do to the shared engine (keep_alive, load-time options, output, models)."""
        self.quotas = quotas
        """The tenants' request and token quotas (reserved before the cache and the engine, settled after)."""
        self.fleet = fleet
        """The engine hosts requests are placed on (None: the one engine behind ``client``)."""
        self._attempts = 2 if fleet is not None else 1

    @property
    def profile(self) -> Selection | None:
        """The active hardware profile (aliases, per-model settings); None without a models config."""
        return self.policy.selection

    def resolve_model(self, body: JsonDict, *, default: str | None = None) -> JsonDict:
        """Fill in the model (the adapter's default when the surface has one, else a clear 400) and resolve
        an alias such as ``default-text`` through the active profile."""
        if not body.get("model"):
            if default is None:
                raise InvalidRequest("model is required", param="model")
            body["model"] = default
        body["model"] = self.policy.resolve_alias(str(body["model"]))
        return body

    async def _check(
        self, ctx: RequestContext, path: str, body: JsonDict, compression: Compression | None = None
    ) -> None:
        """What can be refused before the cache and admission: the prompt's size, then the images (checked and
        compressed here, in the gateway's own workers, before taking an engine slot; the cache key hashes them)."""
        ctx.record.model = str(body["model"])
        applied = self.engine_policy.apply(ctx.tenant, path, body)
        if applied.notes:
            ctx.headers[POLICY_HEADER] = "; ".join(applied.notes)
        if applied.pinned:
            ctx.headers[PINNED_HEADER] = "; ".join(applied.pinned)
        if self.settings.log_prompts:
            log.debug("prompt of %s: %s", ctx.request_id, orjson.dumps(body.get("messages") or body.get("prompt")))
        if path in _PROMPTED:
            limit = ctx.tenant.limits.max_prompt_tokens
            if applied.prompt_limit is not None:
                limit = min(limit, applied.prompt_limit)
            await check_prompt_size(self.client, body, limit, count_budget=self.settings.prompt_count_timeout)
            if request_kind(body) == "vision":
                await self.admission.precheck(ctx, "vision")
            reports = await self.vision.prepare(body, compression)
            if reports:
                ctx.images.extend(reports)
                ctx.headers[IMAGES_HEADER] = summary(reports)

    def _cache_mode(self, ctx: RequestContext, path: str, body: JsonDict, cache: str | None) -> str:
        if path not in _PROMPTED:
            return "off"
        return self.caching.mode(ctx, body, cache)

    async def call(
        self,
        ctx: RequestContext,
        path: str,
        body: JsonDict,
        *,
        compression: Compression | None = None,
        cache: str | None = None,
    ) -> bytes:
        """A non-streamed engine call (chat, generate, embed ...): the engine's raw JSON body. ``cache`` is a
        cache mode the request asked for in its body (service API)."""
        mode = self._cache_mode(ctx, path, body, cache)
        await self._check(ctx, path, body, compression)
        async with self.quotas.reserve(ctx, path, body):  # over a quota: 429 before the cache, queue and engine
            return await self._call(ctx, path, body, mode)

    async def _call(self, ctx: RequestContext, path: str, body: JsonDict, mode: str) -> bytes:
        """A call within its tenant's quotas: the cache, else admission and the engine."""
        if mode != "off":
            hit = await self._lookup(ctx, body, mode)
            if hit is not None:
                return hit.body
        if self.fleet is not None and is_unload(path, body):  # every host that serves the model unloads it
            with targeted(ctx.engine_host):  # or the one the request asked for
                return await self.client.request("POST", path, body)
        self.admission.scheduler.check_room()  # a full queue is refused without touching the engine
        async with self.admission.admit(ctx, str(body["model"]), request_kind(body)) as admitted:
            self._started(ctx, admitted)
            for attempt in range(self._attempts):
                host = ctx.record.host = admitted.ticket.host or ""
                try:
                    async with asyncio.timeout(admitted.remaining()):
                        if self.fleet is None:
                            raw = await self.client.request("POST", path, body)
                        else:
                            raw = await self.fleet.request(str(host), path, body, ctx.headers, ctx.passthrough)
                except TimeoutError:
                    raise overtime(admitted) from None
                except (BackendUnavailable, BackendError) as exc:
                    await self._fail_over(ctx, admitted, exc, attempt)
                    continue  # on another host (this one is out), in the same place
                finally:
                    self._used(admitted)
                self._succeeded(host)
                break
        with contextlib.suppress(orjson.JSONDecodeError):
            account(ctx.record, orjson.loads(raw))
        if mode != "off":
            await self.caching.store(ctx, body, mode, raw)
        return raw

    @asynccontextmanager
    async def stream(
        self,
        ctx: RequestContext,
        path: str,
        body: JsonDict,
        *,
        compression: Compression | None = None,
        cache: str | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed engine call; yields raw NDJSON lines. Leaving the context cancels the generation. A cache
        hit is replayed as a stream; a completed stream is stored (a truncated or failed one never is)."""
        mode = self._cache_mode(ctx, path, body, cache)
        await self._check(ctx, path, body, compression)
        ctx.record.stream = True
        async with self.quotas.reserve(ctx, path, body), self._stream(ctx, path, body, mode) as lines:
            yield lines

    @asynccontextmanager
    async def _stream(
        self, ctx: RequestContext, path: str, body: JsonDict, mode: str
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A stream within its tenant's quotas: a cache hit replayed, else admission and the engine."""
        caching = self.caching if mode != "off" else None
        if caching is not None:
            hit = await self._lookup(ctx, body, mode)
            if hit is not None:
                yield replay(hit.ndjson())
                return
        if self.fleet is not None and is_unload(path, body):  # every host that serves the model unloads it
            with targeted(ctx.engine_host):
                raw = await self.client.request("POST", path, body)
            yield replay([line + b"\n" for line in raw.splitlines() if line.strip()])
            return
        self.admission.scheduler.check_room()
        completed: list[bytes] = []
        async with self.admission.admit(ctx, str(body["model"]), request_kind(body)) as admitted:
            self._started(ctx, admitted)
            for attempt in range(self._attempts):
                host = ctx.record.host = admitted.ticket.host or ""
                try:
                    async with asyncio.timeout(admitted.remaining()):
                        if self.fleet is None:
                            opened = self.client.stream(path, body)
                        else:
                            opened = self.fleet.stream(str(host), path, body, ctx.headers, ctx.passthrough)
                        lines = await opened.__aenter__()
                except TimeoutError:
                    raise overtime(admitted) from None
                except (BackendUnavailable, BackendError) as exc:  # before the first byte: another host may answer
                    await self._fail_over(ctx, admitted, exc, attempt)
                    continue
                self._succeeded(host)
                broken = partial(self.fleet.failed, str(host)) if self.fleet is not None else None
                try:
                    yield within(lines, admitted, ctx, completed if caching is not None else None, broken)
                finally:
                    self._used(admitted)
                    await opened.__aexit__(None, None, None)
                break
        # Only a stream that ran to its end left lines here; it is stored after its slot and place are free.
        answer = aggregate_ndjson(completed, path_kind(body)) if caching is not None and completed else None
        if caching is not None and answer is not None:
            await caching.store(ctx, body, mode, answer)

    async def _lookup(self, ctx: RequestContext, body: JsonDict, mode: str) -> Hit | None:
        if mode == "semantic":  # a semantic lookup asks the engine for an embedding: not for a tenant at its cap
            await self.admission.precheck(ctx, request_kind(body))
        return await self.caching.lookup(ctx, body, mode)

    def _started(self, ctx: RequestContext, admitted: Admitted) -> None:
        self.engine_policy.used(admitted.ticket.model, ctx.tenant.name)
        ctx.record.engine = True
        ctx.record.queue_wait = admitted.ticket.waited
        self._used(admitted)

    async def _fail_over(
        self, ctx: RequestContext, admitted: Admitted, exc: BackendError | BackendUnavailable, attempt: int
    ) -> None:
        """A request whose engine call failed before its first byte: in a fleet, when the host could not be reached
        or answered a 5xx (``Fleet.fail_over`` takes it out), it moves once to another host serving its model,
        keeping its tenant's place, its place in the queue and its deadline; otherwise (one engine, a 4xx, the
        retry spent, a request that asked for its host) ``exc`` goes back to the client."""
        host = admitted.ticket.host
        if self.fleet is None or host is None:
            raise exc
        retry = attempt + 1 < self._attempts and ctx.engine_host is None
        if not self.fleet.fail_over(host, exc, retry=retry):
            raise exc
        try:
            await self.admission.scheduler.move(admitted.ticket, admitted.remaining())
        except RequestTimeout:
            raise overtime(admitted) from None

    def _succeeded(self, host: str) -> None:
        if self.fleet is not None and host:
            self.fleet.succeeded(host)

    def _used(self, admitted: Admitted) -> None:
        """The model is in use now (at a request's start and end: a model's idle time starts after its last answer)."""
        self.memory.touch(admitted.ticket.model)

    def live_state(self) -> LiveState:
        sched = self.admission.scheduler
        in_flight: dict[tuple[str, str], int] = {}
        for (tenant, kind, _), count in [*sched.queued_by().items(), *sched.running_by().items()]:
            in_flight[(tenant, kind)] = in_flight.get((tenant, kind), 0) + count
        return LiveState(
            queue_depth=sched.queued,
            slots_total=sched.slots,
            slots_in_use=sched.running,
            in_flight=in_flight,
            engine_up=self.supervisor.state == EngineState.RUNNING,
            engine_restarts=self.supervisor.restarts,
            loaded_models=self.loaded.names,
            image_bytes_saved=self.vision.images.totals.bytes_saved,
            model_load_seconds=self.loaded.load_seconds(),
            hosts=self._host_figures(),
        )

    def _host_figures(self) -> list[HostFigures]:
        sched = self.admission.scheduler
        if self.fleet is None:
            up = self.supervisor.state == EngineState.RUNNING
            return [HostFigures(LOCAL_HOST, up, sched.slots, sched.running_on(LOCAL_HOST))]
        return self.fleet.figures(sched.running_on)

    async def get(self, path: str) -> bytes:
        return await self.client.request("GET", path)

    async def inspect(self, path: str, body: JsonDict) -> bytes:
        """An engine call that takes no slot (model details, load and unload)."""
        return await self.client.request("POST", path, body)

    async def count_tokens(self, ctx: RequestContext, body: JsonDict, *, load: bool = True) -> int | None:
        """Tokens of a native chat prompt (``{"model", "messages", "tools"}``) as the model sees it, counted by the
        engine's tokenizer: with the model as loaded (no slot), else, with ``load``, admitted like a request (place,
        fair queue, slot, deadline), since counting then loads the model. None when the engine has no tokenizer
        (real Ollama), or the model is not loaded and ``load`` is false."""
        model = str(body["model"])
        ctx.record.model = model
        check_model(ctx.tenant, model)  # counting may load the model: only one the tenant may use
        prompt = {k: v for k, v in body.items() if k != "model"}
        try:
            return await self.client.count_tokens(model, {**prompt, "load": False})
        except BackendError:  # not loaded (the engine answers 409 rather than load it)
            if not load:
                return None
        self.admission.scheduler.check_room()
        async with self.admission.admit(ctx, model, "text") as admitted:
            self._started(ctx, admitted)
            try:
                async with asyncio.timeout(admitted.remaining()):
                    return await self.client.count_tokens(model, prompt)
            except TimeoutError:
                raise overtime(admitted) from None
            finally:
                self._used(admitted)
