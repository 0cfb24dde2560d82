"""A stream's deadline: one timer that ends a wait for the next line as ``asyncio.timeout`` would.

Every wait here ends by an event the test controls or by the deadline itself; the timers only order events
(the loop runs them by due time), nothing asserts on how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared_ollama.service.admission.deadline import StreamDeadline

GUARD = 10.0
"""Outer bound on every test's waits, so a broken deadline fails instead of hanging."""


class Lines:
    """An async iterator of ``items``, then a wait on ``more`` for each further one (never set: a stalled engine)."""

    def __init__(self, *items: bytes, more: asyncio.Event | None = None) -> None:
        self.items = list(items)
        self.more = more or asyncio.Event()
        self.read = 0
        self.cancelled = False
        self.waiting = asyncio.Event()
        """Set once a read waits for a line that has not come."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self.items:
            self.waiting.set()
            try:
                await self.more.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            raise StopAsyncIteration
        self.read += 1
        return self.items.pop(0)


async def test_lines_come_through_until_the_end_before_the_deadline() -> None:
    lines = Lines(b"a\n", b"b\n")
    lines.more.set()
    deadline = StreamDeadline(GUARD)
    try:
        assert [await deadline.next(lines), await deadline.next(lines)] == [b"a\n", b"b\n"]
        with pytest.raises(StopAsyncIteration):
            await deadline.next(lines)
    finally:
        deadline.close()


async def test_a_wait_still_open_at_the_deadline_raises_timeout_and_is_cancelled() -> None:
    lines = Lines()
    deadline = StreamDeadline(0.001)
    reading = asyncio.create_task(deadline.next(lines))
    done, _ = await asyncio.wait({reading}, timeout=GUARD)  # the guard's own expiry must not pass for the deadline's
    assert done, "the deadline did not end the wait"
    assert isinstance(reading.exception(), TimeoutError)
    assert lines.cancelled, "the engine read was cancelled, not left running"
    assert deadline.expired
    assert reading.cancelling() == 0, "the deadline's own cancellation was taken back"


async def test_a_deadline_already_passed_reads_nothing() -> None:
    lines = Lines(b"a\n")
    deadline = StreamDeadline(0)
    with pytest.raises(TimeoutError):
        await deadline.next(lines)
    assert lines.read == 0


async def test_a_deadline_passing_between_waits_ends_the_next_one_at_once() -> None:
    lines = Lines(b"a\n", b"b\n")
    deadline = StreamDeadline(0.001)
    assert await deadline.next(lines) == b"a\n"
    elsewhere = asyncio.Event()  # the consumer busy elsewhere (sending to its client) until after the deadline
    asyncio.get_running_loop().call_later(0.02, elsewhere.set)
    async with asyncio.timeout(GUARD):
        await elsewhere.wait()
    assert deadline.expired
    with pytest.raises(TimeoutError):
        await deadline.next(lines)
    assert lines.read == 1, "no line is read past the deadline"


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    lines = Lines()
    deadline = StreamDeadline(GUARD)
    waiter = asyncio.create_task(deadline.next(lines))
    async with asyncio.timeout(GUARD):
        await lines.waiting.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert not deadline.expired
    deadline.close()


async def test_a_closed_deadline_never_fires() -> None:
    more = asyncio.Event()
    lines = Lines(more=more)
    deadline = StreamDeadline(0.001)
    deadline.close()
    asyncio.get_running_loop().call_later(0.02, more.set)  # due after the deadline would have been
    async with asyncio.timeout(GUARD):
        with pytest.raises(StopAsyncIteration):
            await deadline.next(lines)
    assert not deadline.expired
