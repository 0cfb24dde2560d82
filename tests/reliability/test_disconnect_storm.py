"""A disconnect storm against the real embedded engine: randomized requests across surfaces, streamed or not, with
tools or not, most of them abandoned at a random moment (queued, or generating), some against a gateway with a
tiny deadline. Afterwards every queue, slot and in-flight counter is back to zero on both gateways, and the
engine reports no generation running (its own ``/api/ps`` count, passed through by the gateway).

Two gateway processes share one engine process: ``roomy`` (the default 120 s deadline, so only the clients'
hang-ups end its requests early) and ``tight`` (``SHARED_OLLAMA_QUEUE_TIMEOUT_TEXT`` of 1 s). Abandoned
requests ask for a long generation (a JSON schema that needs a thousand numbers), so one the engine kept
generating would still be running long after the bounded drain poll gives up.

The second test pins down what the storm once showed on a loaded machine: requests abandoned while they wait
inside the engine for a slot must be dropped at once (the engine now keeps them in its own cancellable wait for a
slot, not in llama.cpp's queue, where a call could only stop at its first token).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import engine_process, start_gateway
from tests.integration.conftest import until
from tests.support.processes import stop

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

STORM_REQUESTS = 120
"""The CI size of the storm (issue 10 asks for 500 in a soak: raise it here to run one)."""
CONCURRENCY = 12
SEED = 10
DRAIN_LIMIT = 15.0
"""Seconds for every counter to reach zero after the storm (a generation left running lasts far longer)."""
MODEL = "smollm2:135m"
SURFACES = ("/api/chat", "/api/generate", "/v1/chat/completions", "/api/v1/chat")
TENANTS = ("north", "south", "east")
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
TOOL = {
    "type": "function",
    "function": {
        "name": "record_numbers",
        "description": "Record numbers",
        "parameters": {"type": "object", "properties": {"numbers": LONG}, "required": ["numbers"]},
    },
}
JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Shot:
    """One request of the storm and what the client does with it."""

    gateway: str
    path: str
    body: JsonDict
    tenant: str
    stream: bool
    leave_after: float | None
    """Seconds after which the client hangs up; ``None``: it reads the whole answer."""


def plan(rng: random.Random) -> Shot:
    path = rng.choice(SURFACES)
    stream = rng.random() < 0.5
    tools = path != "/api/generate" and rng.random() < 0.3
    leave_after = rng.uniform(0.0, 1.5) if rng.random() < 0.7 else None
    tokens = 1024 if leave_after is not None else rng.randint(4, 16)
    openai = path.startswith("/v1/")
    body: JsonDict = {"model": MODEL, "stream": stream}
    if path == "/api/generate":
        body["prompt"] = "List the numbers from 1 to 1000."
    else:
        body["messages"] = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
    if openai:
        body["max_tokens"] = tokens
        if leave_after is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "n", "schema": LONG}}
    else:
        body["options"] = {"num_predict": tokens}
        if leave_after is not None:
            body["format"] = LONG
    if tools:
        body["tools"] = [TOOL]
    gateway = "tight" if rng.random() < 0.25 else "roomy"
    return Shot(gateway, path, body, rng.choice(TENANTS), stream, leave_after)


def check_answer(shot: Shot, status: int, headers: httpx.Headers, frames: list[bytes]) -> None:
    """A finished answer: a 200 (a stream that fails late ends with exactly one error frame, last), or a 429/503
    with Retry-After (the tight gateway's deadline, a full queue); never another error."""
    where = (shot.gateway, shot.path, shot.stream, status, frames[-1:])
    if status in (429, 503):
        assert int(headers["Retry-After"]) >= 1, where
        return
    assert status == 200, where
    if not shot.stream:
        return
    payloads = [f.removeprefix(b"data: ") for f in frames if f and f != b"data: [DONE]"]
    errors = [i for i, p in enumerate(payloads) if b'"error"' in p and "error" in orjson.loads(p)]
    assert len(errors) <= 1 and (not errors or errors[0] == len(payloads) - 1), where


async def shoot(client: httpx.AsyncClient, shot: Shot) -> str:
    headers = {"X-Shared-Ollama-Project": shot.tenant}

    async def exchange() -> str:
        async with client.stream("POST", shot.path, json=shot.body, headers=headers) as resp:
            frames = [line.encode() async for line in resp.aiter_lines() if line]
            check_answer(shot, resp.status_code, resp.headers, frames)
            return str(resp.status_code)

    task = asyncio.create_task(exchange())
    done, _ = await asyncio.wait({task}, timeout=shot.leave_after)
    if task in done:
        return task.result()
    task.cancel()  # the client hangs up: httpx closes the connection of a cancelled exchange
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return "left"


async def generations(client: httpx.AsyncClient) -> int:
    """llama.cpp calls the engine is running, by its own count (``/api/ps``, passed through by the gateway)."""
    return int((await client.get("/api/ps")).json()["generations"])


async def engine_busy(client: httpx.AsyncClient) -> int:
    """The engine's generations plus the requests its models still count as in use."""
    body = (await client.get("/api/ps")).json()
    return int(body["generations"]) + sum(int(m.get("requests", 0)) for m in body.get("models", []))


async def busy_counters(client: httpx.AsyncClient) -> list[str]:
    """Every queue, slot and in-flight counter of a gateway that is not zero."""
    stats = (await client.get("/api/v1/queue/stats")).json()
    busy = [f"queue_depth={stats['queue_depth']}"] if stats["queue_depth"] else []
    busy += [f"slots_in_use={stats['engine_slots']['in_use']}"] if stats["engine_slots"]["in_use"] else []
    for name, kinds in stats["tenants"].items():
        for kind, row in kinds.items():
            busy += [f"{name}/{kind} in_flight={row['in_flight']}"] if row["in_flight"] else []
            for priority in ("interactive", "batch"):
                busy += [f"{name}/{kind}/{priority}={row[priority]}"] if any(row[priority].values()) else []
    return busy


@pytest.fixture
def storm_gateways(model_store: Path, tmp_path: Path, artifacts_dir: Path) -> Iterator[dict[str, str]]:
    """``roomy`` (the default deadline) and ``tight`` (a 1 s deadline), both in front of one engine process."""
    with engine_process(model_store, artifacts_dir / "engine-storm.log") as engine_url:
        common = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "16",
        }
        started: list[Any] = []
        try:
            urls = {}
            for name, extra in (("roomy", {}), ("tight", {"SHARED_OLLAMA_QUEUE_TIMEOUT_TEXT": "1"})):
                log = artifacts_dir / f"gateway-storm-{name}.log"
                url, proc = start_gateway(model_store, tmp_path / name, log, {**common, **extra})
                started.append(proc)
                urls[name] = url
            yield urls
        finally:
            for proc in started:
                stop(proc)


@contextlib.asynccontextmanager
async def clients(urls: dict[str, str]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with contextlib.AsyncExitStack() as stack:
        made = {}
        for name, url in urls.items():
            made[name] = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=120, limits=limits))
        yield made


async def test_a_storm_of_hang_ups_leaves_no_slot_place_or_generation_behind(storm_gateways: dict[str, str]) -> None:
    rng = random.Random(SEED)
    shots = [plan(rng) for _ in range(STORM_REQUESTS)]
    outcomes: list[str] = []
    peak = 0
    async with clients(storm_gateways) as http:
        roomy = http["roomy"]
        warm = await roomy.post(
            "/api/chat",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": False,
                "options": {"num_predict": 2},
            },
        )
        assert warm.status_code == 200, warm.text
        queue: asyncio.Queue[Shot] = asyncio.Queue()
        for shot in shots:
            queue.put_nowait(shot)

        async def worker() -> None:
            while not queue.empty():
                shot = queue.get_nowait()
                outcomes.append(await shoot(http[shot.gateway], shot))

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await engine_busy(roomy))
                await asyncio.sleep(0.2)  # sampling interval of the engine's count during the storm

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), timeout=240)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

        assert len(outcomes) == STORM_REQUESTS
        assert outcomes.count("left") >= STORM_REQUESTS // 3, outcomes
        assert outcomes.count("200") >= STORM_REQUESTS // 10, outcomes
        assert peak >= 1, "the engine never generated during the storm"

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_LIMIT
        while True:
            busy = {name: await busy_counters(client) for name, client in http.items()}
            running = await engine_busy(roomy)
            if running == 0 and not any(busy.values()):
                break
            assert loop.time() < deadline, f"not drained after {DRAIN_LIMIT} s: engine {running}, gateways {busy}"
            await asyncio.sleep(0.1)  # polling interval of a bounded wait

        after = await roomy.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert after.status_code == 200, after.text
        health = await http["tight"].get("/api/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy", health.text


@pytest.fixture
def crowded_gateway(
    model_store: Path, tmp_path: Path, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A gateway that admits four requests to an engine process with two llama.cpp slots: the state an engine
    shared by several gateways (or replicas without a shared cap) is in whenever they are all busy."""
    monkeypatch.setenv("SHARED_OLLAMA_ENGINE_NUM_PARALLEL", "2")  # read by the engine process only
    with engine_process(model_store, artifacts_dir / "engine-crowded.log") as engine_url:
        env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_ENGINE_SLOTS": "4",
        }
        url, proc = start_gateway(model_store, tmp_path, artifacts_dir / "gateway-crowded.log", env)
        try:
            yield url
        finally:
            stop(proc)


async def test_requests_abandoned_while_waiting_inside_the_engine_are_dropped_at_once(crowded_gateway: str) -> None:
    long_stream: JsonDict = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "List the numbers from 1 to 1000."}],
        "format": LONG,
        "options": {"num_predict": 1024},
    }
    async with httpx.AsyncClient(base_url=crowded_gateway, timeout=120) as client:

        async def read_all(body: JsonDict, first_line: asyncio.Event | None = None) -> None:
            async with client.stream("POST", "/api/chat", json=body) as resp:
                async for _ in resp.aiter_lines():
                    if first_line is not None:
                        first_line.set()

        async def engine_state() -> tuple[int, int]:
            """(requests holding the model, llama.cpp calls running), by the engine's own count."""
            body = (await client.get("/api/ps")).json()
            return sum(int(m.get("requests", 0)) for m in body.get("models", [])), int(body["generations"])

        async def engine_count(requests: int, running: int, what: str) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while (state := await engine_state()) != (requests, running):
                assert loop.time() < deadline, f"{what}: the engine counts {state}, not {(requests, running)}"
                await asyncio.sleep(0.05)  # polling interval of a bounded wait

        streaming = [asyncio.Event(), asyncio.Event()]
        running = [asyncio.create_task(read_all(long_stream, event)) for event in streaming]
        waiting: list[asyncio.Task[None]] = []
        try:
            for event in streaming:  # both hold a llama.cpp slot: they are streaming tokens
                await asyncio.wait_for(event.wait(), timeout=60)
            waiting += [
                asyncio.create_task(read_all(long_stream)),
                asyncio.create_task(read_all({**long_stream, "stream": False})),
            ]
            await engine_count(4, 2, "two generating, two waiting in the engine for a slot")
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)

            async def two_slots() -> bool:
                return bool((await client.get("/api/v1/queue/stats")).json()["engine_slots"]["in_use"] == 2)

            await until(two_slots, "the gateway freeing the abandoned requests' slots")
            await engine_count(2, 2, "the two abandoned requests dropped, the two generating kept")
        finally:
            for task in running + waiting:
                task.cancel()
            await asyncio.gather(*running, *waiting, return_exceptions=True)
        await engine_count(0, 0, "every generation stopped")
