"""HTTP helpers shared by the gateway's adapters (``api/``) and the embedded engine's server (``engine/``):
the one JSON-object body parser, the one race of a request's work against its client's disconnect, and the
status logged for a client that went away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request

from shared_ollama.errors import InvalidRequest

T = TypeVar("T")
JsonDict = dict[str, Any]

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects a body may have: orjson reads 1024 levels but writes only 254, and a body
is written again on its way to the engine (and into cache keys), so deeper is refused up front, by name."""

CLIENT_CLOSED_STATUS = 499
"""Status logged for a request whose client went away before its answer (nobody receives it)."""

DISCONNECT_WATCH_DELAY = 0.05
"""Seconds of work before ``until_disconnect`` starts watching for the client going away (so a client that leaves
sooner is noticed this late at most)."""

ANSWERED = "answered"
"""Key in a request's ASGI state: the stream's final frame (the answer's end) has gone out."""


def mark_answered(request: Request) -> None:
    """Say that a streamed answer's final frame has been sent. A client that hangs up after reading it (many do,
    without waiting for the end of the chunked body) received its whole answer: it is not ``client_closed``."""
    request.scope.setdefault("state", {})[ANSWERED] = True


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


def parse_json_object(raw: bytes) -> JsonDict:
    """A request body that must be one JSON object; anything else is a 400 saying what is wrong."""
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON body: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest("request body must be a JSON object")
    # Counting brackets is a C-speed scan; only a body with that many of them can be nested that deep.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(parsed) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return parsed


def _depth(value: object) -> int:
    """The nesting depth of arrays and objects in ``value`` (iterative: no recursion limit to hit)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        pending.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` in this task; if the client disconnects first, cancel it (its ``finally`` blocks give back
    what it holds before this returns: queue place, engine slot, generation) and raise ``ClientDisconnected``.
    Only for requests whose body has been read: the watcher consumes the request's remaining messages."""
    current = asyncio.current_task()
    assert current is not None
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await _wait_for_disconnect(request)
        gone = True
        current.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    # Work done within the delay (a cache hit, a short answer) never pays for a watcher task; past it, a client
    # that went away is noticed at once.
    timer = loop.call_later(DISCONNECT_WATCH_DELAY, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and current.uncancel() == 0:
            raise ClientDisconnected from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
