"""The composition root: ``create_app(settings)`` wires everything; the lifespan opens and closes it."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from shared_ollama import __version__
from shared_ollama.api import (
    admin,
    agents,
    anthropic,
    blobs,
    engines,
    ollama,
    openai,
    operations,
    responses,
    service_generation,
    service_models,
    service_vision,
    usage,
)
from shared_ollama.api.errors import install_error_handlers
from shared_ollama.api.middleware import RequestIdMiddleware
from shared_ollama.backends.head_start import HeadStart
from shared_ollama.compose import build
from shared_ollama.service.admission.tenants import Tenants
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)


def _warn_if_open(settings: Settings, tenants: Tenants) -> None:
    if not tenants.auth_enabled and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s with auth OFF: anyone who can reach this address can use the engine and the "
            "admin operations; configure keys (SHARED_OLLAMA_API_KEYS or a tenants file)",
            settings.host,
        )


def create_app(settings: Settings, head_start: HeadStart | None = None) -> FastAPI:
    """The app for ``settings``; ``head_start``: the engine ``serve`` already started, for the supervisor to adopt."""
    tenants = Tenants.from_settings(settings)  # a bad tenants file fails here, before anything starts

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _warn_if_open(settings, tenants)
        async with AsyncExitStack() as stack:  # a failure anywhere in start-up stops what already started
            services = await build(settings, tenants, stack, head_start)
            app.state.gateway = services.gateway
            app.state.telemetry = services.telemetry
            app.state.tenant_store = services.tenant_store
            app.state.responses = services.responses
            app.state.agents = services.agents
            app.state.poml = services.poml
            app.state.started_at = time.time()
            # Everything built so far lives as long as the process: keep the cyclic collector from re-scanning
            # it on every collection (a full pass over it costs milliseconds on the request path).
            gc.collect()
            gc.freeze()
            log.info(
                "gateway started on %s:%s, engine %s",
                settings.host,
                settings.port,
                services.gateway.supervisor.snapshot(),
            )
            yield

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
        ollama,
        openai,
        responses,
        anthropic,
        service_generation,
        service_vision,
        service_models,
        operations,
        engines,
        usage,
        admin,
        agents,
        blobs,
    ):
        app.router.routes.extend(module.router.routes)
    if settings.redis_url:  # replicas share the tenants: each request first checks they are up to date
        app.add_middleware(admin.TenantSyncMiddleware)
    app.add_middleware(RequestIdMiddleware)
    return app
