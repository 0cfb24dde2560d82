"""Engine faults with the real embedded engine: SIGKILL while streams are open on every streaming surface.

test_supervision.py (e2e) covers the rest of the promise: the 503s with Retry-After while the engine restarts,
health degraded then healthy again, and a stalled (SIGSTOPped) engine. What it does not cover is the streams that
were open when the engine died: each must end with exactly one error frame in its own format (DESIGN.md §2), and
their slots and places must be free once the engine is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import start_gateway
from tests.integration.conftest import assert_drained, until
from tests.support.processes import stop

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

MODEL = "smollm2:135m"
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}
ASK = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
STREAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "ollama chat": ("/api/chat", {"model": MODEL, "messages": ASK, "format": LONG, "options": {"num_predict": 1024}}),
    "ollama generate": (
        "/api/generate",
        {"model": MODEL, "prompt": "Numbers:", "format": LONG, "options": {"num_predict": 1024}},
    ),
    "service chat": (
        "/api/v1/chat",
        {"model": MODEL, "messages": ASK, "format": LONG, "stream": True, "options": {"num_predict": 1024}},
    ),
    "openai chat": (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": ASK,
            "stream": True,
            "max_tokens": 1024,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": LONG}},
        },
    ),
}


@pytest.fixture
def gateway(model_store: Path, tmp_path: Path, artifacts_dir: Path) -> Iterator[str]:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-engine-faults.log",
        env={"SHARED_OLLAMA_ENGINE_RESTART_BACKOFF": "1", "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": "4"},
    )
    try:
        yield url
    finally:
        stop(proc)


class OpenStream:
    """A streamed answer read frame by frame (NDJSON lines or SSE ``data:`` events)."""

    def __init__(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
        self.path = path
        self.context = client.stream("POST", path, json=body)
        self.frames: list[bytes] = []
        self.lines: AsyncIterator[str] | None = None

    async def open_and_read_one(self) -> None:
        resp = await self.context.__aenter__()
        assert resp.status_code == 200, (self.path, resp.status_code)
        self.lines = resp.aiter_lines()
        await self.read(1)

    async def read(self, count: int | None = None) -> None:
        assert self.lines is not None
        async for line in self.lines:
            if line:
                self.frames.append(line.encode())
                if count is not None and len(self.frames) >= count:
                    return

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)


def error_frames(stream: OpenStream) -> list[tuple[int, dict[str, Any]]]:
    payloads = [f.removeprefix(b"data: ") for f in stream.frames]
    return [(i, body) for i, body in enumerate(orjson.loads(p) for p in payloads if p != b"[DONE]") if "error" in body]


async def test_streams_open_when_the_engine_is_killed_end_with_one_error_frame(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=120) as client:
        engine_pid = int((await client.get("/api/v1/health")).json()["engine"]["pid"])
        streams = {name: OpenStream(client, path, body) for name, (path, body) in STREAMS.items()}
        try:
            await asyncio.gather(*(s.open_and_read_one() for s in streams.values()))
            os.kill(engine_pid, signal.SIGKILL)
            await asyncio.wait_for(asyncio.gather(*(s.read() for s in streams.values())), timeout=60)
        finally:
            for stream in streams.values():
                await stream.close()

        for name, stream in streams.items():
            errors = error_frames(stream)
            assert len(errors) == 1, (name, stream.frames[-3:])
            index, frame = errors[0]
            total = len([f for f in stream.frames if f != b"data: [DONE]"])
            assert index == total - 1, (name, "the error frame is the last one", stream.frames[-3:])
            if stream.path == "/v1/chat/completions":
                error = frame["error"]
                assert {"message", "type", "code", "param"} <= set(error), (name, frame)
                assert b"data: [DONE]" not in stream.frames, name
            else:
                assert {"error", "code", "retry_after", "request_id"} <= set(frame), (name, frame)
                assert isinstance(frame["error"], str), (name, frame)
                error = frame
            assert error["code"] == "backend_unavailable", (name, frame)
            assert error["retry_after"] >= 1, (name, "a 503-class error says when to retry", frame)

        async def healthy() -> bool:
            resp = await client.get("/api/v1/health")
            return resp.status_code == 200 and resp.json()["engine"]["pid"] != engine_pid

        await until(healthy, "health back to healthy with a new engine", limit=90)
        await assert_drained(client)
        resp = await client.post(
            "/api/chat", json={"model": MODEL, "messages": ASK[:1], "stream": False, "options": {"num_predict": 2}}
        )
        assert resp.status_code == 200, resp.text
