"""One loaded model: an xllamacpp Server and the bridge between its blocking calls and asyncio.

llama.cpp's handlers block and are thread-safe (continuous batching across the model's slots), so every call
runs in a worker thread. Streaming chunks arrive through a callback on that thread and are handed to the
event loop; when the consumer goes away the callback returns True, which stops generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_ollama.engine.store import ModelEntry
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]


class EngineCallError(Exception):
    """llama.cpp refused or failed a request."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


def _check(result: Any) -> JsonDict:
    if not isinstance(result, dict):
        raise EngineCallError(f"unexpected engine result {type(result).__name__}")
    error = result.get("error")
    if error:
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
        code = int(error.get("code", 500)) if isinstance(error, dict) and str(error.get("code", "")).isdigit() else 500
        if "too large" in message or "exceeds the available context" in message:
            code = 400  # the input does not fit the model's context: the client's to fix
        raise EngineCallError(message, code if 400 <= code < 600 else 500)
    return result


def _error_from(exc: Exception) -> EngineCallError:
    if isinstance(exc, EngineCallError):
        return exc
    if isinstance(exc, ValueError):
        return EngineCallError(str(exc), 400)
    return EngineCallError(f"{exc.__class__.__name__}: {exc}")


@dataclass
class LoadedModel:
    entry: ModelEntry
    server: Any
    num_ctx: int
    load_ns: int
    executor: Executor
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float | None = 300.0
    """Seconds to stay loaded after the last request; None = forever."""

    @classmethod
    def load(cls, entry: ModelEntry, gguf: Path, settings: Settings, num_ctx: int, executor: Executor) -> LoadedModel:
        """Blocking: build the llama.cpp server for ``entry`` (call from a worker thread)."""
        import xllamacpp

        started = time.monotonic_ns()
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf)
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
        params.warmup = False
        if "embedding" in entry.capabilities:
            ctx = min(num_ctx, entry.context_length or 512)
            params.embedding = True
            params.n_parallel = 1
            params.n_ctx = ctx
            params.n_batch = ctx
            params.n_ubatch = ctx
            params.embd_normalize = -1
        else:
            slots = settings.engine_num_parallel
            params.n_parallel = slots
            params.n_ctx = num_ctx * slots
            params.ctx_shift = False  # a full context ends generation ("length"), never an endless shift
        server = xllamacpp.Server(params)
        return cls(entry, server, num_ctx, time.monotonic_ns() - started, executor)

    @property
    def expires_in(self) -> float | None:
        if self.keep_alive is None:
            return None
        return self.last_used + self.keep_alive - time.monotonic()

    async def call(self, method: str, request: JsonDict) -> JsonDict:
        loop = asyncio.get_running_loop()
        fn = getattr(self.server, method)
        try:
            return _check(await loop.run_in_executor(self.executor, fn, request))
        except EngineCallError:
            raise
        except Exception as exc:
            raise _error_from(exc) from exc

    async def stream(self, method: str, request: JsonDict) -> AsyncIterator[JsonDict]:
        """Yield llama.cpp's chunks; closing the iterator stops generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        fn = getattr(self.server, method)

        def put(kind: str, item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def on_chunk(chunk: Any) -> bool:
            if not stop.is_set():
                put("chunk", chunk)
            return stop.is_set()

        def run() -> None:
            try:
                put("done", fn({**request, "stream": True}, on_chunk))
            except Exception as exc:
                put("error", exc)

        future = loop.run_in_executor(self.executor, run)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "chunk":
                    yield _check(item)
                elif kind == "error":
                    raise _error_from(item)
                else:
                    if isinstance(item, dict) and item.get("error"):
                        _check(item)
                    return
        finally:
            stop.set()
            future.add_done_callback(lambda f: f.exception())

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Raw (unnormalised) mean-pooled vectors and the prompt token count."""
        result = await self.call("handle_embeddings", {"input": texts})
        data = sorted(result.get("data") or [], key=lambda d: d.get("index", 0))
        vectors = [list(map(float, d["embedding"])) for d in data]
        tokens = int((result.get("usage") or {}).get("prompt_tokens") or 0)
        return vectors, tokens

    def close(self) -> None:
        self.server = None


def l2_normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector
