"""Loaded models: shared loads, Ollama keep_alive, and least-recently-used eviction beyond a maximum."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager

from shared_ollama.engine.footprint import LoadMeter
from shared_ollama.engine.machine import physical_cores, prompt_cache_mib, thread_share, total_ram
from shared_ollama.engine.runtime import EngineCallError, LoadedModel
from shared_ollama.engine.store import ModelEntry, ModelStore
from shared_ollama.protocol.durations import keep_alive_seconds
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
_REAP_INTERVAL = 1.0
"""Seconds between keep-alive checks (the precision of an idle unload)."""


def _same_load(loaded: ModelEntry, wanted: ModelEntry) -> bool:
    """Whether a model loaded for ``loaded`` serves ``wanted`` (same weights, projector, adapters, chat template).

    System prompt, parameters and messages apply per request, so a model re-created with new ones is reused.
    """
    return (loaded.digest, loaded.projector, loaded.adapters, loaded.template) == (
        wanted.digest,
        wanted.projector,
        wanted.adapters,
        wanted.template,
    )


class ModelRegistry:
    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store
        self.executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="llama")
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._reaper: asyncio.Task[None] | None = None
        self._releasing: list[threading.Thread] = []
        self._notifiers: set[asyncio.Task[None]] = set()
        self.meter = LoadMeter()
        """Measures what each load takes (``/api/ps``), one load at a time."""
        self.loads: Counter[str] = Counter()
        """Completed loads per model since the engine started (``/api/ps``): a reload shows as a new count."""
        self.cores = physical_cores()
        self.cache_ram_mib = prompt_cache_mib(settings.engine_cache_ram_mib, total_ram())

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="keep-alive-reaper")

    async def close(self) -> None:
        """Stop the reaper and unload every model, waiting (bounded) until their memory is freed."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for task in list(self._loading.values()):
            with contextlib.suppress(Exception):
                await task
        for name in list(self._loaded):
            self._drop(name)
        deadline = time.monotonic() + self.settings.engine_stop_timeout
        for thread in self._releasing:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
        self.executor.shutdown(wait=False, cancel_futures=True)

    def loaded(self) -> list[LoadedModel]:
        return sorted(self._loaded.values(), key=lambda m: -m.last_used)

    @contextmanager
    def held_if_loaded(self, name: str) -> Iterator[LoadedModel | None]:
        """``name``'s loaded instance, kept from eviction while the block runs; None when it is not loaded
        (nothing is loaded here: a token count must not load a model outside the gateway's admission)."""
        model = self._loaded.get(name)
        if model is None:
            yield None
            return
        model.in_flight += 1
        try:
            yield model
        finally:
            model.in_flight -= 1
            self._poke()

    def _num_ctx(self, entry: ModelEntry, requested: int | None) -> int:
        num_ctx = int(requested or entry.parameters.get("num_ctx") or self.settings.engine_num_ctx)
        return min(num_ctx, entry.context_length) if entry.context_length else num_ctx

    def _drop(self, name: str) -> None:
        """Forget a model and free its memory in the background (callers make sure it is idle)."""
        model = self._loaded.pop(name, None)
        if model is not None:
            thread = model.close()
            self._releasing = [t for t in self._releasing if t.is_alive()]
            if thread is not None:
                self._releasing.append(thread)
            log.info("unloaded %s", name)
            self._poke()

    def _poke(self) -> None:
        """Wake everyone waiting for a state change, from a task of its own (safe during cancellation)."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        task = asyncio.get_running_loop().create_task(notify())
        self._notifiers.add(task)
        task.add_done_callback(self._notifiers.discard)

    async def _wait_idle(self, name: str) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: name not in self._loaded or self._loaded[name].in_flight == 0)

    def _claimed(self, name: str) -> bool:
        """A request for ``name`` is between its load and its use (it holds the model's lock): not evictable."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    async def _make_room(self) -> None:
        """Evict least-recently-used idle models until one more fits (waits while all are busy). A model just
        loaded for a request that has not taken it yet is busy: evicting it would leave that request a closed model."""
        async with self._changed:
            while len(self._loaded) + len(self._loading) >= self.settings.engine_max_loaded_models:
                idle = [m for m in self._loaded.values() if m.in_flight == 0 and not self._claimed(m.entry.name)]
                if idle:
                    self._drop(min(idle, key=lambda m: m.last_used).entry.name)
                else:
                    await self._changed.wait()

    async def _load(self, entry: ModelEntry, num_ctx: int) -> LoadedModel:
        """Load in a worker thread and register the model, even when the request that asked went away."""
        loop = asyncio.get_running_loop()
        gguf = self.store.model_path(entry)
        held = len(self._loaded.keys() | self._loading.keys() | {entry.name})  # loaded or loading, this one included
        load = functools.partial(
            LoadedModel.load,
            threads=thread_share(self.settings.engine_threads, self.cores, held),
            cache_ram_mib=self.cache_ram_mib,
        )
        measured = functools.partial(load, entry, gguf, self.settings, num_ctx, self.executor)
        try:
            model = await loop.run_in_executor(self.executor, self._measured, measured, entry.size)
        except Exception as exc:
            log.exception("loading %s failed", entry.name)
            hint = " (check its TEMPLATE: llama.cpp could not use it as a chat template)" if entry.template else ""
            raise EngineCallError(f"failed to load model '{entry.name}': {exc}{hint}") from exc
        finally:
            self._loading.pop(entry.name, None)
            self._poke()
        model.keep_alive = self._default_keep_alive()
        self._loaded[entry.name] = model
        self.loads[entry.name] += 1
        log.info("loaded %s (num_ctx %s, %s threads) in %.2fs", entry.name, num_ctx, model.threads, model.load_ns / 1e9)
        return model

    def _measured(self, load: Callable[[], LoadedModel], file_bytes: int) -> LoadedModel:
        """Blocking: ``load()`` under the meter, once models being unloaded have freed their memory (bounded)."""

        def settle() -> None:
            deadline = time.monotonic() + self.settings.engine_stop_timeout
            for thread in list(self._releasing):
                thread.join(max(0.0, deadline - time.monotonic()))

        model, footprint = self.meter.measure(load, file_bytes, settle)
        model.footprint = footprint
        return model

    def _default_keep_alive(self) -> float | None:
        return keep_alive_seconds(None, self.settings.engine_keep_alive)

    async def _get(self, entry: ModelEntry, num_ctx: int) -> tuple[LoadedModel, int]:
        """The loaded model, counted in flight, and the load time this request paid (0 if already loaded)."""
        name = entry.name
        load_ns = 0
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            while True:
                pending = self._loading.get(name)
                if pending is not None:  # a load whose requester went away: share it
                    await asyncio.shield(pending)
                    continue
                current = self._loaded.get(name)
                if current is not None and (current.num_ctx != num_ctx or not _same_load(current.entry, entry)):
                    await self._wait_idle(name)  # Ollama reloads for another context size, after the running requests
                    if self._loaded.get(name) is current:
                        self._drop(name)
                    continue
                if current is None:
                    await self._make_room()
                    task = asyncio.get_running_loop().create_task(self._load(entry, num_ctx))
                    self._loading[name] = task
                    current = await asyncio.shield(task)
                    load_ns = current.load_ns
                current.in_flight += 1
                current.last_used = time.monotonic()
                return current, load_ns

    @asynccontextmanager
    async def use(
        self, entry: ModelEntry, num_ctx: int | None, keep_alive: float | None
    ) -> AsyncIterator[tuple[LoadedModel, int]]:
        """Hold ``entry`` loaded for one request; afterwards apply its keep_alive (0 unloads at once)."""
        try:
            model, load_ns = await self._get(entry, self._num_ctx(entry, num_ctx))
        except BaseException:
            self._poke()  # a request gone before using its model: the model it kept from eviction is idle now
            raise
        try:
            yield model, load_ns
        finally:
            model.in_flight -= 1
            model.last_used = time.monotonic()
            model.keep_alive = keep_alive
            if keep_alive == 0 and model.in_flight == 0 and self._loaded.get(entry.name) is model:
                self._drop(entry.name)
            self._poke()

    async def load(self, entry: ModelEntry, num_ctx: int | None, keep_alive: float | None) -> int:
        """Load (or refresh) a model without a request; returns the load time paid in nanoseconds."""
        async with self.use(entry, num_ctx, keep_alive) as (_, load_ns):
            return load_ns

    async def unload(self, name: str) -> None:
        """Unload ``name`` once its running requests are done (no-op when it is not loaded)."""
        pending = self._loading.get(name)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        if name in self._loaded:
            await self._wait_idle(name)
            self._drop(name)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(_REAP_INTERVAL)
            for model in list(self._loaded.values()):
                remaining = model.expires_in
                if model.in_flight == 0 and remaining is not None and remaining <= 0:
                    self._drop(model.entry.name)
