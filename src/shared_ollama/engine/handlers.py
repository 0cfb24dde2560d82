"""The engine's Ollama API handlers: chat, generate, embeddings and the model listings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from shared_ollama.engine import views
from shared_ollama.engine.answers import (
    Accumulator,
    content_payload,
    created_at,
    final_fields,
    ollama_logprobs,
    piece,
    response,
)
from shared_ollama.engine.registry import ModelRegistry
from shared_ollama.engine.runtime import EngineCallError, l2_normalize
from shared_ollama.engine.store import ModelEntry, ModelStore
from shared_ollama.engine.translate import (
    TranslationError,
    chat_request,
    check_request,
    generate_request,
    top_logprobs,
)
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.durations import keep_alive_seconds
from shared_ollama.settings import Settings
from shared_ollama.web import parse_json_object, until_disconnect

JsonDict = dict[str, Any]
T = TypeVar("T")
NDJSON = "application/x-ndjson"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(body: JsonDict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def ndjson_line(body: JsonDict) -> bytes:
    return orjson.dumps(body) + b"\n"


class NDJSONStream(StreamingResponse):
    """A streamed response that always runs ``on_close`` (releasing its model), even if it never started."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type=NDJSON)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.on_close()


async def read_json(request: Request) -> JsonDict:
    try:
        return parse_json_object(await request.body())
    except InvalidRequest as exc:
        raise ApiError(400, exc.message) from None


class EngineApp:
    """Route handlers over one store and one registry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.store_dir)
        self.registry = ModelRegistry(settings, self.store)

    def entry(self, body: JsonDict) -> ModelEntry:
        name = body.get("model") or body.get("name") or ""
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model is required")
        entry = self.store.get(name)
        if entry is None:
            raise ApiError(404, f"model '{name}' not found")
        return entry

    def keep_alive(self, body: JsonDict) -> float | None:
        value = body.get("keep_alive")
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise ApiError(400, "keep_alive must be a number of seconds or a duration string")
        try:
            return keep_alive_seconds(value, self.settings.engine_keep_alive)
        except ValueError as exc:
            raise ApiError(400, f"invalid keep_alive: {exc}") from exc

    @staticmethod
    def num_ctx(body: JsonDict) -> int | None:
        options = body.get("options")
        value = options.get("num_ctx") if isinstance(options, dict) else None
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None

    # ------------------------------------------------------------------ chat and generate

    async def generation(self, request: Request, kind: str) -> Response:
        body = await read_json(request)
        try:
            check_request(kind, body)
        except TranslationError as exc:
            raise ApiError(400, str(exc)) from exc
        entry = self.entry(body)
        if "completion" not in entry.capabilities:
            raise ApiError(400, f'"{body["model"]}" does not support {"chat" if kind == "chat" else "generate"}')
        keep_alive = self.keep_alive(body)
        if not (body.get("messages") if kind == "chat" else body.get("prompt")):
            return await self._load_or_unload(entry, body, kind, keep_alive)
        try:
            if kind == "chat":
                method, llama_req = "handle_chat_completions", chat_request(body, entry)
            else:
                method, llama_req = generate_request(body, entry)
        except TranslationError as exc:
            raise ApiError(400, str(exc)) from exc
        started = time.monotonic_ns()
        streamed = body.get("stream") is not False
        name = str(body["model"])
        top = top_logprobs(body)
        llama_req["stream_options"] = {"include_usage": True}
        if llama_req.get("tools"):  # tool calls are answered whole (collected from llama.cpp's stream)
            async with self.registry.use(entry, self.num_ctx(body), keep_alive) as (model, load_ns):
                chunks = model.stream(method, llama_req)
                try:
                    result = await until_disconnect(request, _collect(chunks))
                finally:
                    await chunks.aclose()  # stops llama.cpp before the model counts as idle
            out = response(kind, name, result, started, load_ns, top)
            return NDJSONStream(_once(out), _nothing) if streamed else json_response(out)
        stack = AsyncExitStack()
        try:
            model, load_ns = await stack.enter_async_context(self.registry.use(entry, self.num_ctx(body), keep_alive))
            chunks = model.stream(method, llama_req)
            stack.push_async_callback(chunks.aclose)
            if not streamed:
                async with stack:  # releases the model (and applies keep_alive) before answering
                    result = await until_disconnect(request, _collect(chunks))
                return json_response(response(kind, name, result, started, load_ns, top))
            # Failures before the first token keep their HTTP status; a client that leaves while its request
            # waits for a slot or its first token is noticed here (the stream's own watch starts after).
            first = await until_disconnect(request, anext(chunks, None))
        except BaseException:
            await stack.aclose()
            raise
        lines = self._lines(kind, name, first, chunks, started, load_ns, top)
        return NDJSONStream(lines, stack.aclose)

    async def _lines(
        self,
        kind: str,
        name: str,
        first: JsonDict | None,
        chunks: AsyncIterator[JsonDict],
        started: int,
        load_ns: int,
        top: int | None,
    ) -> AsyncIterator[bytes]:
        """Ollama's stream: a line per chunk with text, thinking or (when asked) log probabilities, then the
        final line with the statistics."""
        finish: str | None = None
        last: JsonDict = {}
        try:
            chunk = first
            while chunk is not None:
                part = piece(chunk)
                finish = part.finish or finish
                if chunk.get("usage") or chunk.get("timings"):
                    last = chunk
                logprobs = ollama_logprobs(part.logprobs, top) if top is not None else None
                if part.text or part.thinking or logprobs:
                    payload = content_payload(kind, part.text, thinking=part.thinking, logprobs=logprobs)
                    yield ndjson_line({"model": name, "created_at": created_at(), **payload, "done": False})
                chunk = await anext(chunks, None)
            final = {"model": name, "created_at": created_at(), **content_payload(kind, "")}
            final.update(final_fields(last, finish, started, load_ns))
            yield ndjson_line(final)
        except EngineCallError as exc:
            yield ndjson_line({"error": str(exc)})

    async def _load_or_unload(self, entry: ModelEntry, body: JsonDict, kind: str, keep_alive: float | None) -> Response:
        """Ollama's empty request: load the model (or with keep_alive 0, unload it)."""
        out: JsonDict = {"model": body["model"], "created_at": created_at(), **content_payload(kind, "")}
        if keep_alive == 0:
            await self.registry.unload(entry.name)
            out.update(done=True, done_reason="unload")
        else:
            load_ns = await self.registry.load(entry, self.num_ctx(body), keep_alive)
            out.update(done=True, done_reason="load")
            if load_ns:
                out["load_duration"] = load_ns
        return json_response(out)

    # ------------------------------------------------------------------ embeddings

    async def _embedder(self, body: JsonDict) -> tuple[ModelEntry, float | None]:
        entry = self.entry(body)
        if "embedding" not in entry.capabilities:
            raise ApiError(400, f'"{body["model"]}" does not support embeddings')
        return entry, self.keep_alive(body)

    async def embed(self, request: Request) -> Response:
        body = await read_json(request)
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            texts = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(t, str) for t in raw_input):
            texts = raw_input
        elif raw_input is None:
            texts = []
        else:
            raise ApiError(400, "invalid input type")
        truncate = True if body.get("truncate") is None else body["truncate"]  # Ollama's default: cut to fit
        dims = body.get("dimensions")
        bad_dims = dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 0)
        if not isinstance(truncate, bool) or bad_dims:
            raise ApiError(400, "truncate must be a boolean and dimensions a positive integer")
        entry, keep_alive = await self._embedder(body)
        if dims and entry.embedding_length and dims > entry.embedding_length:
            raise ApiError(400, _too_many_dimensions(dims, entry.embedding_length))
        started = time.monotonic_ns()
        async with self.registry.use(entry, self.num_ctx(body), keep_alive) as (model, load_ns):
            vectors, tokens = await model.embed(texts, truncate) if texts else ([], 0)
        if dims and vectors and dims > len(vectors[0]):
            raise ApiError(400, _too_many_dimensions(dims, len(vectors[0])))
        if dims:  # cut, then normalised below: Ollama's truncation to fewer dimensions
            vectors = [v[:dims] for v in vectors]
        return json_response(
            {
                "model": body["model"],
                "embeddings": [l2_normalize(v) for v in vectors],
                "total_duration": time.monotonic_ns() - started,
                "load_duration": load_ns,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(self, request: Request) -> Response:
        """The legacy endpoint: one prompt, its raw (unnormalised) vector."""
        body = await read_json(request)
        prompt = body.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be a string")
        entry, keep_alive = await self._embedder(body)
        async with self.registry.use(entry, self.num_ctx(body), keep_alive) as (model, _):
            vectors, _ = await model.embed([prompt]) if prompt else ([[]], 0)
        return json_response({"embedding": vectors[0]})

    # ------------------------------------------------------------------ models

    async def tags(self, request: Request) -> Response:
        entries = sorted(self.store.list(), key=lambda e: e.modified_at, reverse=True)
        return json_response({"models": [views.tag(e) for e in entries]})

    async def ps(self, request: Request) -> Response:
        """Ollama's ``/api/ps``, plus what this engine is doing: per model the requests holding it and the llama.cpp
        calls running (``generations``), and their total (a generation whose client left must drop out of it); and
        ``loads``, the loads per model since the engine started (a reload shows as a new count)."""
        loaded = sorted(self.registry.loaded(), key=views.expiry_order)  # Ollama's order: longest left first
        return json_response(
            {
                "models": [views.running(m) for m in loaded],
                "generations": sum(m.generating for m in loaded),
                "loads": dict(self.registry.loads),
            }
        )

    async def show(self, request: Request) -> Response:
        return json_response(views.show(self.entry(await read_json(request))))

    async def version(self, request: Request) -> Response:
        return json_response({"version": views.API_VERSION})


def _too_many_dimensions(asked: int, size: int) -> str:
    return f"dimensions {asked} is more than the model's embedding size ({size}); ask for at most {size}"


async def _collect(chunks: AsyncIterator[JsonDict]) -> JsonDict:
    accumulator = Accumulator()
    async for chunk in chunks:
        accumulator.feed(chunk)
    return accumulator.result()


async def _once(body: JsonDict) -> AsyncIterator[bytes]:
    yield ndjson_line(body)


async def _nothing() -> None:
    return None
