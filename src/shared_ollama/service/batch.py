"""Batches: many chat (or vision) requests in one call, each through the same pipeline as any request.

Items run at batch priority with bounded concurrency inside the tenant's cap. Every item gets its own
result in its own place — the engine's answer, or a structured error — so one bad item never fails the
others. An item that finds the tenant at its cap (the tenant's other traffic) waits and tries again until
its deadline, rather than failing: a batch is a promise to do the work, not a burst to be rejected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared_ollama.errors import RequestTimeout, SharedOllamaError, TenantBusy
from shared_ollama.service.images.vision import Compression

JsonDict = dict[str, Any]
RunItem = Callable[[int, "Prepared"], Awaitable[JsonDict]]
"""Runs one (already validated) item through the pipeline; returns the engine's answer."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item after validation: a body to run, or the error that stopped it."""

    body: JsonDict | None
    error: SharedOllamaError | None = None
    compression: Compression | None = None


def error_entry(exc: SharedOllamaError) -> JsonDict:
    return {"error": exc.message, "code": exc.code, "status": exc.status, "retry_after": exc.retry_after}


async def run_batch(items: list[Prepared], run: RunItem, *, concurrency: int, deadline: float) -> JsonDict:
    """Run every item (at most ``concurrency`` at once) and report them in order with totals."""
    started = time.perf_counter()
    results: list[JsonDict | None] = [None] * len(items)
    next_index = iter(range(len(items)))

    async def one(index: int) -> JsonDict:
        item = items[index]
        if item.body is None:
            assert item.error is not None
            return {"index": index, "ok": False, **error_entry(item.error)}
        give_up = time.monotonic() + deadline
        while True:
            try:
                return {"index": index, "ok": True, "response": await run(index, item)}
            except TenantBusy as exc:  # the tenant's other requests hold its places: wait for one
                if time.monotonic() >= give_up:
                    return {"index": index, "ok": False, **error_entry(exc)}
                await asyncio.sleep(min(max(exc.retry_after or 0.1, 0.05), 1.0))
            except SharedOllamaError as exc:
                return {"index": index, "ok": False, **error_entry(exc)}

    async def worker() -> None:
        for index in next_index:
            results[index] = await one(index)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(items))))))
    done = [r for r in results if r is not None]
    if len(done) != len(items):  # cannot happen: every index is taken by exactly one worker
        raise RequestTimeout("the batch did not finish")
    succeeded = sum(1 for r in done if r["ok"])
    return {
        "results": done,
        "total": len(done),
        "succeeded": succeeded,
        "failed": len(done) - succeeded,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
