"""Automatic memory management: unload idle models, and least-recently-used ones under memory pressure.

The gateway tracks when it last used each model itself (``touch``), rather than trusting the engine alone.
Every ``interval`` seconds the manager:

1. unloads every loaded model not used for longer than its idle timeout (default 5 min; per-model overrides);
2. while system memory use is above the threshold (default 85 %), unloads the least recently used loaded
   model that no request is using, one at a time, re-reading memory after each.

Unloading uses the engine's own unload (``keep_alive: 0``), so it works the same on Ollama and on the
embedded engine. The clock and the memory reading are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import psutil

from shared_ollama.protocol.names import canonical_model

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]


def memory_percent() -> float:
    return float(psutil.virtual_memory().percent)


@dataclass
class MemoryManager:
    loaded: Callable[[], Awaitable[list[str]]]
    """The engine's loaded models, freshly asked."""
    unload: Callable[[str], Awaitable[object]]
    busy: Callable[[], Collection[str]]
    """Models with requests queued or running now (never unloaded)."""
    idle_timeout: Callable[[str], float]
    interval: float = 60.0
    high_percent: float = 85.0
    max_loaded: int | None = None
    """Models kept loaded at once (the profile's limit); beyond it the least recently used idle ones go."""
    read_memory: Callable[[], float] = memory_percent
    clock: Callable[[], float] = time.monotonic
    last_used: dict[str, float] = field(default_factory=dict)
    unloaded: list[JsonDict] = field(default_factory=list)
    """The most recent unloads (model, reason, when), newest last, bounded."""
    _task: asyncio.Task[None] | None = None

    def touch(self, model: str) -> None:
        self.last_used[canonical_model(model)] = self.clock()

    def _busy(self) -> set[str]:
        return {canonical_model(m) for m in self.busy()}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory-manager")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # one failed pass (engine restarting...) must not stop the manager
                log.warning("memory check failed", exc_info=True)

    async def check(self) -> list[JsonDict]:
        """One pass; returns what it unloaded and why. Whether a model is busy or was just used is read again
        right before each unload: a request may start for it while the pass waits on the engine."""
        done: list[JsonDict] = []
        names = {canonical_model(m): m for m in await self.loaded()}  # canonical -> as the engine lists it
        loaded = list(names)
        started = self.clock()
        busy = self._busy()
        for model in [m for m in self.last_used if m not in names and m not in busy]:
            del self.last_used[model]  # neither loaded nor in use: nothing to time (and names sent are unbounded)
        for model in loaded:
            self.last_used.setdefault(model, started)  # first seen now: its idle time starts now
        for model in loaded:
            idle = self.clock() - self.last_used[model]
            timeout = self.idle_timeout(model)
            if idle > timeout and self._still_idle(model, started):
                done.append(await self._unload(model, names[model], f"idle for {idle:.0f} s (timeout {timeout:g} s)"))
        unloaded = {d["model"] for d in done}
        remaining = [m for m in loaded if names[m] not in unloaded]
        while self.max_loaded is not None and len(remaining) > self.max_loaded:
            candidates = [m for m in remaining if self._still_idle(m, started)]
            if not candidates:
                break
            victim = min(candidates, key=lambda m: self.last_used.get(m, started))
            reason = f"{len(remaining)} models loaded, more than the limit of {self.max_loaded}"
            done.append(await self._unload(victim, names[victim], reason))
            remaining.remove(victim)
        while remaining and (used := self.read_memory()) > self.high_percent:
            candidates = [m for m in remaining if self._still_idle(m, started)]
            if not candidates:
                log.warning("memory at %.1f %% but every loaded model is in use", used)
                break
            victim = min(candidates, key=lambda m: self.last_used.get(m, started))
            reason = f"memory at {used:.1f} % > {self.high_percent:g} %"
            done.append(await self._unload(victim, names[victim], reason))
            remaining.remove(victim)
        return done

    def _still_idle(self, model: str, since: float) -> bool:
        """Not busy now, and not used since the pass started."""
        return model not in self._busy() and self.last_used.get(model, since) <= since

    async def _unload(self, key: str, model: str, reason: str) -> JsonDict:
        await self.unload(model)
        self.last_used.pop(key, None)
        entry = {"model": model, "reason": reason, "at": time.time()}
        self.unloaded = [*self.unloaded[-49:], entry]
        log.info("unloaded %s: %s", model, reason)
        return entry

    def snapshot(self) -> JsonDict:
        now = self.clock()
        return {
            "interval_seconds": self.interval,
            "memory_percent": round(self.read_memory(), 1),
            "high_percent": self.high_percent,
            "max_loaded_models": self.max_loaded,
            "idle_seconds": {m: round(now - t, 1) for m, t in sorted(self.last_used.items())},
            "recent_unloads": self.unloaded[-10:],
        }
