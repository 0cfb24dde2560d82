"""One loaded model: an xllamacpp Server and the bridge between its blocking calls and asyncio.

llama.cpp's handlers block and are thread-safe (continuous batching across the model's slots), so every call
runs in a worker thread. Streaming chunks arrive through a callback on that thread and are handed to the
event loop; when the consumer goes away the callback returns True, which stops generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.engine.footprint import Footprint
from shared_ollama.engine.lora import lora_params
from shared_ollama.engine.machine import gpu_devices
from shared_ollama.engine.store import ModelEntry
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]
_EMBEDDING_CTX = 512
"""Per-slot context of an embedding model when its metadata does not say (BERT's 512)."""


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


def _error_from(exc: BaseException) -> EngineCallError:
    if isinstance(exc, EngineCallError):
        return exc
    if isinstance(exc, ValueError):
        return EngineCallError(str(exc), 400)
    if isinstance(exc, RuntimeError) and "not supported" in str(exc):
        return EngineCallError(str(exc), 400)
    return EngineCallError(f"{exc.__class__.__name__}: {exc}")


def _http_json(base: str, path: str, body: JsonDict | None = None, key: str = "") -> Any:
    """Blocking call to the llama.cpp HTTP API the Server also listens on (loopback only, with its API key)."""
    data = orjson.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(base + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return orjson.loads(reply.read())


def _llama_call(base: str, path: str, body: JsonDict, key: str = "") -> JsonDict:
    """``_http_json`` with llama.cpp's errors (HTTP or in the body) as EngineCallError."""
    try:
        return _check(_http_json(base, path, body, key))
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError, OSError):
            _check(orjson.loads(exc.read()))  # raises with llama.cpp's own message and code
        status = exc.code if 400 <= exc.code < 600 else 500
        raise EngineCallError(f"llama.cpp answered HTTP {exc.code} on {path}", status) from exc


def _release(holder: list[Any]) -> None:
    """Drop the last reference to a Server (its destructor joins llama.cpp's threads)."""
    started = time.monotonic()
    holder.clear()
    log.debug("model memory released in %.3fs", time.monotonic() - started)


def llama_params(
    entry: ModelEntry,
    gguf: Path,
    settings: Settings,
    num_ctx: int,
    *,
    threads: int,
    cache_ram_mib: int,
    api_key: str = "",
) -> tuple[Any, int]:
    """llama.cpp's parameters for ``entry`` (an ``xllamacpp.CommonParams``, nothing loaded yet) and the context
    per slot they give; ``threads`` and ``cache_ram_mib`` come from ``engine/machine.py``. llama.cpp also serves
    the model over HTTP on a loopback port: ``api_key`` keeps other users of the machine off it."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    if api_key:
        params.api_keys = [api_key]
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cache_ram_mib = cache_ram_mib  # llama.cpp's prompt cache: 8 GiB per model unless bounded
    params.warmup = False
    params.verbosity = 3 if settings.log_level == "debug" else 0
    slots = settings.engine_num_parallel
    params.n_parallel = slots
    if "embedding" in entry.capabilities:
        # Each input is one sequence that must fit one slot and one micro-batch (the encoder is not causal).
        num_ctx = min(num_ctx, entry.context_length or _EMBEDDING_CTX)
        params.embedding = True
        params.n_ctx = num_ctx * slots
        params.n_batch = num_ctx
        params.n_ubatch = num_ctx
        params.embd_normalize = -1  # raw pooled vectors; /api/embed normalises, /api/embeddings does not
    else:
        params.n_ctx = num_ctx * slots  # llama.cpp divides the context among the slots
        params.ctx_shift = False  # a full context ends generation ("length"), never an endless shift
    if entry.template:  # a Jinja chat template from /api/create (Go templates are refused there)
        params.chat_template = entry.template
    if entry.projector:
        params.mmproj.path = str(gguf.parent / entry.projector.replace(":", "-"))
    if entry.adapters:  # LoRA adapters from /api/create, applied by llama.cpp to every request
        params.lora_adapters = lora_params(entry, gguf.parent)
    return params, num_ctx


@dataclass
class LoadedModel:
    entry: ModelEntry
    server: Any
    num_ctx: int
    load_ns: int
    executor: Executor
    slots: int = 1
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    keep_alive: float | None = 300.0
    """Seconds to stay loaded after the last request; None = forever."""
    address: str = ""
    api_key: str = field(default="", repr=False)
    """The key of llama.cpp's own HTTP server for this model (``address``)."""
    threads: int = 0
    """CPU threads llama.cpp runs this model with (fixed at load)."""
    on_gpu: bool = False
    """Whether llama.cpp can offload the model to a GPU (its default fits as many layers as the GPU holds)."""
    footprint: Footprint | None = None
    """Memory the load took, measured (``engine/footprint.py``); None when it could not be."""
    generating: int = 0
    """llama.cpp calls running now in worker threads (the engine's own view: it drops only when a call returns)."""
    stop_wait: float = 5.0
    """How long a stopped stream waits for llama.cpp to notice (it checks at the next token)."""
    _free_slots: asyncio.Semaphore | None = field(default=None, repr=False)
    _special: tuple[list[int], list[int]] | None = None

    @classmethod
    def load(
        cls,
        entry: ModelEntry,
        gguf: Path,
        settings: Settings,
        num_ctx: int,
        executor: Executor,
        *,
        threads: int,
        cache_ram_mib: int,
    ) -> LoadedModel:
        """Blocking: build the llama.cpp server for ``entry`` (call from a worker thread)."""
        import xllamacpp

        started = time.monotonic_ns()
        key = secrets.token_urlsafe(24)
        params, num_ctx = llama_params(
            entry, gguf, settings, num_ctx, threads=threads, cache_ram_mib=cache_ram_mib, api_key=key
        )
        server = xllamacpp.Server(params)
        address = str(server.listening_address)
        on_gpu = gpu_devices() > 0
        # A task round trip proves llama.cpp's main loop is running: deleting a Server whose loop has not
        # started yet can hang its destructor.
        with contextlib.suppress(OSError, ValueError):
            _http_json(address, "/slots", key=key)
        elapsed = time.monotonic_ns() - started
        return cls(
            entry,
            server,
            num_ctx,
            elapsed,
            executor,
            slots=params.n_parallel,
            address=address,
            api_key=key,
            threads=threads,
            on_gpu=on_gpu,
        )

    @property
    def expires_in(self) -> float | None:
        if self.keep_alive is None:
            return None
        return self.last_used + self.keep_alive - time.monotonic()

    @property
    def memory_estimate(self) -> int:
        """Weights plus an f16 KV cache for every slot (what /api/ps reports as the model's size)."""
        info = self.entry.model_info
        arch = self.entry.family
        layers = int(info.get(f"{arch}.block_count") or 0)
        heads = int(info.get(f"{arch}.attention.head_count") or 0)
        kv_heads = int(info.get(f"{arch}.attention.head_count_kv") or heads)
        width = int(info.get(f"{arch}.embedding_length") or 0)
        kv_cache = 0
        if heads and "embedding" not in self.entry.capabilities:
            kv_cache = 2 * layers * kv_heads * (width // heads) * self.num_ctx * self.slots * 2
        return self.entry.size + kv_cache

    async def _run(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` on a worker thread once one of the model's slots is free, counted in ``generating`` until
        the thread's call returns (not until its awaiting task is cancelled: a cancelled wait leaves llama.cpp
        running, and the count must say so). Calls wait for a slot here, where a client that leaves simply stops
        waiting, not in llama.cpp's own queue, where a call can only be stopped once it has started."""
        if self._free_slots is None:
            self._free_slots = asyncio.Semaphore(max(1, self.slots))
        await self._free_slots.acquire()
        loop = asyncio.get_running_loop()
        self.generating += 1
        try:
            work = self.executor.submit(fn, *args)
        except BaseException:
            self._finished()
            raise

        def finished(_: object) -> None:  # on the worker thread, when ``fn`` has returned
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is counting any more
                loop.call_soon_threadsafe(self._finished)

        work.add_done_callback(finished)
        return asyncio.wrap_future(work, loop=loop)

    def _finished(self) -> None:
        self.generating -= 1
        if self._free_slots is not None:
            self._free_slots.release()

    async def call(self, method: str, request: JsonDict) -> JsonDict:
        """A call that cannot be stopped once started (embeddings); generations use ``stream``."""
        fn = getattr(self.server, method)
        try:
            return _check(await (await self._run(fn, request)))
        except EngineCallError:
            raise
        except Exception as exc:
            raise _error_from(exc) from exc

    async def stream(self, method: str, request: JsonDict) -> AsyncIterator[JsonDict]:
        """Yield llama.cpp's chunks; closing the iterator stops generation at the next token."""
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

        future = await self._run(run)
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
            if not future.done():  # the model stays in use until llama.cpp has stopped (bounded)
                await asyncio.wait({future}, timeout=self.stop_wait)

    async def embed(self, texts: list[str], truncate: bool = True) -> tuple[list[list[float]], int]:
        """Raw (unnormalised) pooled vectors and the prompt token count.

        An input longer than the model's context is cut to fit when ``truncate`` (Ollama's default);
        otherwise it is a 400.
        """
        try:
            result = await self.call("handle_embeddings", {"input": texts})
        except EngineCallError as exc:
            if exc.status != 400:
                raise
            if not truncate:
                raise EngineCallError(f"input exceeds maximum context length: {exc}", 400) from exc
            loop = asyncio.get_running_loop()
            inputs = await loop.run_in_executor(self.executor, self._fitted_inputs, texts)
            result = await self.call("handle_embeddings", {"input": inputs})
        data = sorted(result.get("data") or [], key=lambda d: d.get("index", 0))
        vectors = [list(map(float, d["embedding"])) for d in data]
        tokens = int((result.get("usage") or {}).get("prompt_tokens") or 0)
        return vectors, tokens

    async def count_tokens(self, text: str = "", chat: JsonDict | None = None) -> int:
        """Tokens the model sees for ``text`` (a prompt as is, special tokens added), or for ``chat``
        (``{"messages": [...], "tools": [...]}`` in llama.cpp's shape) rendered by the model's chat template.
        """
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, self._count_tokens, text, chat)
        except EngineCallError:
            raise
        except Exception as exc:
            raise _error_from(exc) from exc

    def _count_tokens(self, text: str, chat: JsonDict | None) -> int:
        if chat is not None:
            text = str(_llama_call(self.address, "/apply-template", chat, self.api_key).get("prompt") or "")
        return len(self._tokenize(text))

    def _tokenize(self, text: str) -> list[int]:
        """Blocking: ``text``'s tokens as llama.cpp tokenizes a prompt (special tokens added and parsed)."""
        reply = _llama_call(self.address, "/tokenize", {"content": text, "add_special": True}, self.api_key)
        return [int(t) for t in reply.get("tokens", [])]

    def _fitted_inputs(self, texts: list[str]) -> list[str | list[int]]:
        """Blocking: each text as is when it fits one slot, else its tokens cut to fit (special tokens kept)."""
        if self._special is None:
            bare = self._tokenize("")
            self._special = (bare[:1], bare[1:]) if len(bare) > 1 else (bare, [])
        prefix, suffix = self._special
        room = self.num_ctx - len(prefix) - len(suffix)
        fitted: list[str | list[int]] = []
        for text in texts:
            tokens = self._tokenize(text)
            if len(tokens) <= self.num_ctx:
                fitted.append(text)
                continue
            body = tokens[len(prefix) : len(tokens) - len(suffix) if suffix else None]
            fitted.append([*prefix, *body[: max(room, 1)], *suffix])
        return fitted

    def close(self) -> threading.Thread | None:
        """Free the model's memory on a background thread (never blocks the event loop); returns the thread."""
        if self.server is None:
            return None
        holder = [self.server]
        self.server = None
        thread = threading.Thread(target=_release, args=(holder,), name="llama-unload", daemon=True)
        del holder
        thread.start()
        return thread


def l2_normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector
