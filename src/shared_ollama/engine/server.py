"""The embedded engine's HTTP server: Ollama's API on llama.cpp, served by uvicorn."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from shared_ollama.engine import views
from shared_ollama.engine.durations import keep_alive_seconds
from shared_ollama.engine.registry import ModelRegistry
from shared_ollama.engine.runtime import EngineCallError, l2_normalize
from shared_ollama.engine.store import ModelEntry, ModelStore
from shared_ollama.engine.translate import (
    TranslationError,
    chat_request,
    chunk_text,
    content_payload,
    created_at,
    final_fields,
    generate_request,
    response,
)
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: JsonDict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _body(request: Request) -> JsonDict:
    raw = await request.body()
    try:
        parsed = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, "request body must be a JSON object")
    return parsed


class EngineApp:
    """Route handlers over one store and one registry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.store_dir)
        self.registry = ModelRegistry(settings, self.store)

    def entry(self, body: JsonDict) -> ModelEntry:
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            raise ApiError(400, "model is required")
        entry = self.store.get(name)
        if entry is None:
            raise ApiError(404, f"model '{name}' not found")
        return entry

    def keep_alive(self, body: JsonDict) -> float | None:
        try:
            return keep_alive_seconds(body.get("keep_alive"), self.settings.engine_keep_alive)
        except ValueError as exc:
            raise ApiError(400, f"invalid keep_alive: {exc}") from exc

    @staticmethod
    def num_ctx(body: JsonDict) -> int | None:
        value = (body.get("options") or {}).get("num_ctx")
        return int(value) if isinstance(value, int | float) and value > 0 else None

    # ------------------------------------------------------------------ generation

    async def generation(self, request: Request, kind: str) -> Response:
        body = await _body(request)
        entry = self.entry(body)
        if "completion" not in entry.capabilities:
            raise ApiError(400, f'"{entry.name}" does not support {"chat" if kind == "chat" else "generate"}')
        keep_alive = self.keep_alive(body)
        is_empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        if is_empty:
            return await self._load_or_unload(entry, body, kind, keep_alive)
        try:
            if kind == "chat":
                method, llama_req = "handle_chat_completions", chat_request(body, entry)
            else:
                method, llama_req = generate_request(body, entry)
        except TranslationError as exc:
            raise ApiError(400, str(exc)) from exc
        started = time.monotonic_ns()
        if body.get("stream") is False or llama_req.get("tools"):
            stream_wanted = body.get("stream") is not False
            async with self.registry.use(entry, self.num_ctx(body), keep_alive) as (model, load_ns):
                result = await model.call(method, llama_req)
            out = response(kind, body["model"], result, started, load_ns)
            if stream_wanted:
                return StreamingResponse(_once(out), media_type="application/x-ndjson")
            return _json(out)
        llama_req["stream_options"] = {"include_usage": True}
        return StreamingResponse(
            self._stream(kind, str(body["model"]), entry, body, keep_alive, method, llama_req, started),
            media_type="application/x-ndjson",
        )

    async def _stream(
        self,
        kind: str,
        model_name: str,
        entry: ModelEntry,
        body: JsonDict,
        keep_alive: float | None,
        method: str,
        llama_req: JsonDict,
        started: int,
    ) -> AsyncIterator[bytes]:
        finish: str | None = None
        last: JsonDict = {}
        try:
            async with self.registry.use(entry, self.num_ctx(body), keep_alive) as (model, load_ns):
                chunks = model.stream(method, llama_req)
                try:
                    async for chunk in chunks:
                        text, _, reason = chunk_text(chunk)
                        finish = reason or finish
                        last = chunk
                        if text:
                            line = {"model": model_name, "created_at": created_at(), **content_payload(kind, text)}
                            line["done"] = False
                            yield orjson.dumps(line) + b"\n"
                finally:
                    await chunks.aclose()
            final = {"model": model_name, "created_at": created_at(), **content_payload(kind, "")}
            final.update(final_fields(last, finish, started, load_ns))
            yield orjson.dumps(final) + b"\n"
        except (EngineCallError, ApiError) as exc:
            yield orjson.dumps({"error": str(exc)}) + b"\n"

    async def _load_or_unload(self, entry: ModelEntry, body: JsonDict, kind: str, keep_alive: float | None) -> Response:
        if keep_alive == 0:
            await self.registry.unload(entry.name)
            reason, load_ns = "unload", 0
        else:
            try:
                load_ns = await self.registry.load(entry, self.num_ctx(body), keep_alive)
            except EngineCallError as exc:
                raise ApiError(500, str(exc)) from exc
            reason = "load"
        out = {
            "model": body["model"],
            "created_at": created_at(),
            **content_payload(kind, ""),
            "done_reason": reason,
            "done": True,
        }
        if load_ns:
            out["load_duration"] = load_ns
        if body.get("stream") is False:
            return _json(out)
        return StreamingResponse(_once(out), media_type="application/x-ndjson")

    # ------------------------------------------------------------------ embeddings

    async def _embed(self, body: JsonDict, texts: list[str]) -> tuple[ModelEntry, list[list[float]], int, int, int]:
        entry = self.entry(body)
        if "embedding" not in entry.capabilities:
            raise ApiError(400, f'"{entry.name}" does not support embeddings')
        started = time.monotonic_ns()
        async with self.registry.use(entry, self.num_ctx(body), self.keep_alive(body)) as (model, load_ns):
            vectors, tokens = await model.embed(texts)
        return entry, vectors, tokens, load_ns, time.monotonic_ns() - started

    async def embed(self, request: Request) -> Response:
        body = await _body(request)
        raw_input = body.get("input", "")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
            raise ApiError(400, "input must be a string or a non-empty list of strings")
        _, vectors, tokens, load_ns, total = await self._embed(body, texts)
        dims = body.get("dimensions")
        if isinstance(dims, int) and dims > 0:
            vectors = [v[:dims] for v in vectors]
        return _json(
            {
                "model": body["model"],
                "embeddings": [l2_normalize(v) for v in vectors],
                "total_duration": total,
                "load_duration": load_ns,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = await _body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string")
        if not prompt:
            return _json({"embedding": []})
        _, vectors, _, _, _ = await self._embed(body, [prompt])
        return _json({"embedding": vectors[0]})

    # ------------------------------------------------------------------ models

    async def tags(self, request: Request) -> Response:
        return _json({"models": [views.tag(e) for e in self.store.list()]})

    async def ps(self, request: Request) -> Response:
        return _json({"models": [views.running(m) for m in self.registry.loaded()]})

    async def show(self, request: Request) -> Response:
        return _json(views.show(self.entry(await _body(request))))

    async def version(self, request: Request) -> Response:
        return _json({"version": views.API_VERSION})


async def _once(body: JsonDict) -> AsyncIterator[bytes]:
    yield orjson.dumps(body) + b"\n"


def create_engine_app(settings: Settings) -> Starlette:
    engine = EngineApp(settings)

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return _json({"error": exc.message}, exc.status)
            except EngineCallError as exc:
                return _json({"error": str(exc)}, exc.status if 400 <= exc.status < 600 else 500)

        return endpoint

    async def chat(request: Request) -> Response:
        return await engine.generation(request, "chat")

    async def generate(request: Request) -> Response:
        return await engine.generation(request, "generate")

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
        Route("/api/version", guarded(engine.version), methods=["GET"]),
        Route("/api/tags", guarded(engine.tags), methods=["GET"]),
        Route("/api/ps", guarded(engine.ps), methods=["GET"]),
        Route("/api/show", guarded(engine.show), methods=["POST"]),
        Route("/api/chat", guarded(chat), methods=["POST"]),
        Route("/api/generate", guarded(generate), methods=["POST"]),
        Route("/api/embed", guarded(engine.embed), methods=["POST"]),
        Route("/api/embeddings", guarded(engine.embeddings), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine = engine
    return app


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from shared_ollama.logs import configure_logging

    configure_logging(settings.log_level)
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
