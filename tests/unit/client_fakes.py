"""Fakes for the Python client's unit tests: a scripted service behind ``httpx.MockTransport``, a recording
sleep on a fake clock, and response bodies that stream in parts (and record being closed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

Reply = Callable[[], httpx.Response] | Exception


class Script:
    """Answers each request with the next reply (a response factory, or an exception to raise); records them."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.replies, f"unexpected request {request.method} {request.url}"
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply()

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


class Sleeper:
    """``sleep`` that records each wait and moves the fake ``clock`` instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def error(status: int, code: str, *, header: str | None = None, retry_after: float | None = None) -> Reply:
    def reply() -> httpx.Response:
        body = {"error": f"refused: {code}", "code": code, "retry_after": retry_after, "request_id": "rid-1"}
        headers = {"X-Shared-Ollama-Request-Id": "rid-1"}
        if header is not None:
            headers["Retry-After"] = header
        return httpx.Response(status, json=body, headers=headers)

    return reply


def ok(body: Any, status: int = 200) -> Reply:
    return lambda: httpx.Response(status, json=body, headers={"X-Shared-Ollama-Request-Id": "rid-ok"})


def lines(*items: Any) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


class Parts(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body sent in ``parts``, then (optionally) ``fail`` raised, or (``hang``) never ending; records closing."""

    def __init__(self, parts: list[bytes], fail: Exception | None = None, hang: bool = False) -> None:
        self.parts = parts
        self.fail = fail
        self.hang = hang
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            self.sent += 1
            yield part
        if self.fail is not None:
            raise self.fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            self.sent += 1
            yield part
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await asyncio.Event().wait()  # a generation that goes on until the reader leaves

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def streamed(body: Parts, content_type: str = "application/x-ndjson") -> Reply:
    return lambda: httpx.Response(200, stream=body, headers={"Content-Type": content_type})
