"""The embedded engine's HTTP server: Ollama's API on llama.cpp, served by uvicorn."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shared_ollama.engine.access import RequireToken
from shared_ollama.engine.blobs import blob
from shared_ollama.engine.handlers import ApiError, EngineApp, json_response
from shared_ollama.engine.machine import warn_if_busy_engines
from shared_ollama.engine.manage import ModelManager
from shared_ollama.engine.runtime import EngineCallError
from shared_ollama.engine.tokenize import tokenize
from shared_ollama.settings import Settings
from shared_ollama.web import CLIENT_CLOSED_STATUS, ClientDisconnected

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Errors as Ollama sends them: ``{"error": "..."}`` with the matching status; one debug line per request."""

    async def endpoint(request: Request) -> Response:
        started = time.monotonic()
        try:
            reply = await handler(request)
        except ApiError as exc:
            reply = json_response({"error": exc.message}, exc.status)
        except EngineCallError as exc:
            reply = json_response({"error": str(exc)}, exc.status if 400 <= exc.status < 600 else 500)
        except ClientDisconnected:
            reply = Response(status_code=CLIENT_CLOSED_STATUS)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.url.path)
            reply = json_response({"error": f"internal error: {exc.__class__.__name__}: {exc}"}, 500)
        if log.isEnabledFor(logging.DEBUG):
            elapsed = (time.monotonic() - started) * 1000
            log.debug("%s %s %s %.1fms", request.method, request.url.path, reply.status_code, elapsed)
        return reply

    return endpoint


def create_engine_app(settings: Settings) -> Starlette:
    """The engine as an ASGI app; its lifespan starts the keep-alive reaper and unloads every model at the end."""
    engine = EngineApp(settings)
    manager = ModelManager(engine)

    async def chat(request: Request) -> Response:
        return await engine.generation(request, "chat")

    async def generate(request: Request) -> Response:
        return await engine.generation(request, "generate")

    async def count(request: Request) -> Response:
        return await tokenize(engine, request)

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine.registry.start()
        try:
            yield
        finally:
            await engine.registry.close()

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", _guarded(engine.version), methods=["GET", "HEAD"]),
        Route("/api/tags", _guarded(engine.tags), methods=["GET", "HEAD"]),
        Route("/api/ps", _guarded(engine.ps), methods=["GET"]),
        Route("/api/show", _guarded(engine.show), methods=["POST"]),
        Route("/api/chat", _guarded(chat), methods=["POST"]),
        Route("/api/generate", _guarded(generate), methods=["POST"]),
        Route("/api/embed", _guarded(engine.embed), methods=["POST"]),
        Route("/api/embeddings", _guarded(engine.embeddings), methods=["POST"]),
        Route("/api/create", _guarded(manager.create), methods=["POST"]),
        Route("/api/blobs/{digest}", _guarded(functools.partial(blob, engine)), methods=["HEAD", "POST"]),
        Route("/api/copy", _guarded(manager.copy), methods=["POST"]),
        Route("/api/delete", _guarded(manager.delete), methods=["DELETE"]),
        Route("/api/pull", _guarded(manager.pull), methods=["POST"]),
        Route("/api/tokenize", _guarded(count), methods=["POST"]),  # ours, not Ollama's: see engine/tokenize.py
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    if settings.engine_token:  # a managed engine: only its gateway may use it (engine/access.py)
        app.add_middleware(RequireToken, token=settings.engine_token)
    app.state.engine = engine
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the engine until SIGINT/SIGTERM (uvicorn's graceful shutdown, then every model is unloaded)."""
    import uvicorn

    from shared_ollama.logs import configure_logging, flush_on_stop_signals

    flush_on_stop_signals(configure_logging(settings.log_level))
    # One bounded scan (about a second, beside the start-up): another engine busy on the machine is logged.
    threading.Thread(target=warn_if_busy_engines, args=({os.getpid()},), name="engine-scan", daemon=True).start()
    uvicorn.run(
        create_engine_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
