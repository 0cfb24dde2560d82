"""A small asyncio load generator (aiohttp): bounded in request count and wall time, loopback only."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    wall: float = 0.0
    queue_waits: list[float] = field(default_factory=list)
    """Seconds each answered request waited in the gateway's queue (its X-Shared-Ollama-Queue-Wait-Ms)."""

    @property
    def count(self) -> int:
        return len(self.latencies)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        data = sorted(values if values is not None else self.latencies)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def rps(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, stream: bool, result: Result, headers: dict[str, str]
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                await resp.read()
                result.errors += 1
                return
            wait_ms = resp.headers.get("X-Shared-Ollama-Queue-Wait-Ms")
            if wait_ms is not None:
                result.queue_waits.append(int(wait_ms) / 1000)
            if not stream:
                await resp.read()
            else:
                first = True
                async for line in resp.content:
                    if not line.strip():
                        continue
                    if first:
                        result.first_token.append(time.perf_counter() - started)
                        first = False
                    result.tokens += 1
    except (aiohttp.ClientError, OSError):
        result.errors += 1
        return
    result.latencies.append(time.perf_counter() - started)


async def run_load(
    url: str,
    payload: dict[str, object],
    *,
    concurrency: int,
    requests: int,
    max_seconds: float,
    stream: bool = False,
    headers: dict[str, str] | None = None,
) -> Result:
    """Send ``requests`` requests with ``concurrency`` workers, stopping early after ``max_seconds``."""
    body = orjson.dumps({**payload, "stream": stream})
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    result = Result()
    remaining = [requests]
    deadline = time.perf_counter() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=max(60.0, max_seconds))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                await _one(session, url, body, stream, result, all_headers)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall = time.perf_counter() - started
    return result
