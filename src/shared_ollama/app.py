"""The composition root: ``create_app(settings)`` wires everything; the lifespan opens and closes it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared_ollama import __version__
from shared_ollama.api import routes_ollama, routes_openai, routes_service
from shared_ollama.api.errors import install_error_handlers
from shared_ollama.api.middleware import RequestIdMiddleware
from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.supervisor import EngineSupervisor
from shared_ollama.service.gateway import Gateway
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        supervisor = EngineSupervisor(settings)
        await supervisor.start()
        client = EngineClient(supervisor.base_url, settings, is_available=supervisor.is_available)
        await client.open()
        app.state.gateway = Gateway(settings, client, supervisor)
        app.state.started_at = time.time()
        log.info("gateway ready on %s:%s, engine %s", settings.host, settings.port, supervisor.snapshot())
        try:
            yield
        finally:
            await client.close()
            await supervisor.stop()

    app = FastAPI(
        title="Shared Ollama Service",
        version=__version__,
        description="One local LLM service shared by many projects: Ollama and OpenAI formats over one pipeline.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(routes_service.router)
    app.include_router(routes_ollama.router)
    app.include_router(routes_openai.router)
    app.add_middleware(RequestIdMiddleware)
    return app
