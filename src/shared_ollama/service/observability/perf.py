"""Performance over a recent window, per model: latency, time to first token, tokens/s, load times."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared_ollama.service.observability.records import RequestRecord


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    latency: float
    ttft: float | None
    tps: float | None
    load: float
    ok: bool


def _pcts(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 4)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 4)}


class PerformanceWindow:
    """The last ``window`` seconds (at most ``size`` requests per model) of requests that ran on the engine."""

    def __init__(self, window: float = 900.0, size: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self.window = window
        self.size = size
        self._clock = clock
        self._models: dict[str, deque[_Sample]] = {}

    def add(self, rec: RequestRecord, model: str) -> None:
        """Add ``rec`` under ``model``, its label from a bounded set (``labels.py``); nothing without one."""
        if not rec.engine or not model:
            return
        tps = rec.completion_tokens / rec.eval_seconds if rec.eval_seconds > 0 and rec.completion_tokens else None
        sample = _Sample(rec.ts, rec.latency, rec.ttft, tps, rec.load_seconds, rec.status < 400)
        self._models.setdefault(model, deque(maxlen=self.size)).append(sample)

    def snapshot(self) -> dict[str, Any]:
        since = self._clock() - self.window
        models: dict[str, Any] = {}
        for name, samples in sorted(self._models.items()):
            recent = [s for s in samples if s.at >= since]
            if not recent:
                continue
            loads = [s.load for s in recent if s.load > 0]
            models[name] = {
                "requests": len(recent),
                "errors": sum(1 for s in recent if not s.ok),
                "latency_seconds": _pcts([s.latency for s in recent if s.ok]),
                "time_to_first_token_seconds": _pcts([s.ttft for s in recent if s.ttft is not None]),
                "tokens_per_second": _pcts([s.tps for s in recent if s.tps is not None]),
                "loads": len(loads),
                "load_seconds": _pcts(loads),
            }
        return {"window_seconds": self.window, "models": models}
