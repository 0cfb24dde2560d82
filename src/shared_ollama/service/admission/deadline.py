"""A request's deadline over a stream: one timer for the stream's whole life, not one per line.

``asyncio.timeout`` around each wait for the engine's next line is correct but costs a timeout object, a timer
and a cancellation check per token (about a fifth of the gateway's CPU per streamed chunk, bench/defaults.py).
``StreamDeadline`` arms one timer; when it fires while the stream waits for a line, it cancels that wait and the
wait raises ``TimeoutError``, as ``asyncio.timeout`` would (a cancellation from anywhere else stays a
cancellation); when it fires while the consumer is busy elsewhere (sending the last line to the client), the
next wait raises ``TimeoutError`` at once. Past the deadline no further line is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


class StreamDeadline:
    """``seconds`` from now, for the waits of one stream (made, used and closed in one event loop)."""

    def __init__(self, seconds: float) -> None:
        self.expired = seconds <= 0
        """The deadline has passed."""
        self._waiting: asyncio.Task[object] | None = None
        self._handle = None if self.expired else asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._handle = None
        if self._waiting is not None:
            self._waiting.cancel()

    async def next(self, iterator: AsyncIterator[T]) -> T:
        """``iterator``'s next item; ``TimeoutError`` when the deadline passed before or during the wait."""
        if self.expired:
            raise TimeoutError
        task: asyncio.Task[object] | None = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._waiting = task
        try:
            return await anext(iterator)
        except asyncio.CancelledError:
            # Ours only when the deadline cancelled this wait and nobody else cancelled the task meanwhile.
            if self.expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = None

    def close(self) -> None:
        """Disarm the timer (the stream is over)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
