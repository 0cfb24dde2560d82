"""The composition root: ``create_app(settings)`` wires everything; the lifespan opens and closes it."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared_ollama import __version__
from shared_ollama.api import (
    routes_manage,
    routes_models,
    routes_observe,
    routes_ollama,
    routes_openai,
    routes_service,
    routes_vision,
)
from shared_ollama.api.errors import install_error_handlers
from shared_ollama.api.middleware import RequestIdMiddleware
from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.supervisor import EngineSupervisor
from shared_ollama.service.admission import Admission
from shared_ollama.service.analytics import AnalyticsStore
from shared_ollama.service.cache import CacheConfig, ResponseCache, make_store
from shared_ollama.service.caching import Caching, engine_embedder
from shared_ollama.service.gateway import Gateway
from shared_ollama.service.images import ImageProcessor
from shared_ollama.service.inflight import InflightCounter, LocalInflight
from shared_ollama.service.lifecycle import choose_profile, memory_manager, preload
from shared_ollama.service.scheduler import Scheduler
from shared_ollama.service.telemetry import Telemetry
from shared_ollama.service.tenants import Tenants
from shared_ollama.service.vision import Vision
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)


def _counter(settings: Settings) -> InflightCounter:
    if settings.redis_url:
        from shared_ollama.service.inflight_redis import RedisInflight

        return RedisInflight(settings.redis_url, settings.redis_lease_seconds)
    return LocalInflight()


def _warn_if_open(settings: Settings, tenants: Tenants) -> None:
    if not tenants.auth_enabled and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s with auth OFF: anyone who can reach this address can use the engine and the "
            "admin operations; configure keys (SHARED_OLLAMA_API_KEYS or a tenants file)",
            settings.host,
        )


def create_app(settings: Settings) -> FastAPI:
    tenants = Tenants.from_settings(settings)  # a bad tenants file fails here, before anything starts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _warn_if_open(settings, tenants)
        supervisor = EngineSupervisor(settings)
        counter = _counter(settings)
        await counter.start()
        await supervisor.start()
        client = EngineClient(supervisor.base_url, settings, is_available=supervisor.is_available)
        await client.open()
        scheduler = Scheduler(
            settings.slots,
            settings.max_queue,
            model_capacity=settings.scheduling_capacity,
            model_aging=settings.model_aging_seconds,
            batch_aging=settings.batch_aging_seconds,
        )
        images = ImageProcessor(settings)
        vision = Vision(client, images)
        gateway = Gateway(settings, client, supervisor, tenants, Admission(scheduler, counter), vision)
        analytics = AnalyticsStore(
            settings.data_dir / "analytics.sqlite3", retention_days=settings.analytics_retention_days
        )
        await analytics.start()
        cache_config = CacheConfig(
            enabled=settings.cache_enabled,
            ttl_seconds=settings.cache_ttl_seconds,
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_bytes,
            scope=settings.cache_scope,
            semantic_threshold=settings.cache_semantic_threshold,
            semantic_max_messages=settings.cache_semantic_max_messages,
            embed_timeout=settings.cache_embed_timeout,
            redis_url=settings.redis_url,
        )
        cache = ResponseCache(
            cache_config, make_store(cache_config), engine_embedder(client, settings.cache_embedding_model)
        )
        gateway.caching = Caching(cache, client)
        app.state.gateway = gateway
        app.state.telemetry = Telemetry(analytics, gateway.live_state, access_log=settings.access_log)
        plan = supervisor.plan
        gateway.profile = await choose_profile(settings, gateway, can_pull=plan is not None and plan.kind != "embedded")
        gateway.memory = memory_manager(settings, gateway)
        gateway.memory.start()
        warm_up = (
            asyncio.create_task(preload(gateway, gateway.profile), name="preload")
            if settings.preload_models and gateway.profile is not None
            else None
        )
        app.state.started_at = time.time()
        # Everything built so far lives as long as the process: keep the cyclic collector from re-scanning it
        # on every collection (a full pass over it costs milliseconds on the request path).
        gc.collect()
        gc.freeze()
        log.info("gateway ready on %s:%s, engine %s", settings.host, settings.port, supervisor.snapshot())
        try:
            yield
        finally:
            if warm_up is not None:
                warm_up.cancel()
            await gateway.memory.close()
            await client.close()
            await supervisor.stop()
            await counter.close()
            await analytics.close()
            await cache.close()
            images.close(wait=False)

    app = FastAPI(
        title="Shared Ollama Service",
        version=__version__,
        description="One local LLM service shared by many projects: Ollama and OpenAI formats over one pipeline.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        # The service keeps its own metrics and logs; FastAPI's OpenTelemetry hooks would only cost a
        # provider look-up per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    # The routes go straight into the app's router, busiest surfaces first: matching is a scan in order, and
    # included (nested) routers would add a matching pass per router to every request.
    for module in (
        routes_ollama,
        routes_openai,
        routes_service,
        routes_vision,
        routes_models,
        routes_manage,
        routes_observe,
    ):
        app.router.routes.extend(module.router.routes)
    app.add_middleware(RequestIdMiddleware)
    return app
