"""Streamed answers: iterators (``Stream``) and async iterators (``AsyncStream``) of typed chunks.

A stream holds its connection open until it is read to its end, fails, or is closed. Closing it early (``close``
/ ``aclose``, leaving its ``with`` block, breaking out of the loop of a ``with`` block, or cancelling the task
reading it) closes the connection, and the service then stops the generation and frees the request's place. An
error frame in the stream raises the typed error of its code; a stream cut off before its last chunk raises
``ConnectionFailed``. A stream is never retried once its answer has started.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Generic, TypeVar, cast

import httpx

from shared_ollama_client._transport import transport_error
from shared_ollama_client._wire import REQUEST_ID_HEADER, Call, Decoder, JsonObject

T = TypeVar("T")


class Stream(Generic[T]):
    """The chunks of a streamed answer, as they arrive. Use it in a ``with`` block, or ``close()`` it."""

    def __init__(self, response: httpx.Response, call: Call) -> None:
        self.response = response
        self.request_id: str | None = response.headers.get(REQUEST_ID_HEADER)
        """The service's id of this request."""
        self._decoder = Decoder(call, self.request_id)
        self._lines: Iterator[str] = response.iter_lines()
        self.closed = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self.closed:
            raise StopIteration
        try:
            item = self._next()
        except httpx.TransportError as exc:
            self.close()
            raise transport_error(exc, self.response.request.url) from exc
        except BaseException:
            self.close()
            raise
        if item is None:
            self.close()
            raise StopIteration
        return cast(T, item)

    def _next(self) -> JsonObject | None:
        if self._decoder.ended:
            return None
        for line in self._lines:
            item = self._decoder.feed(line)
            if item is not None:
                return item
            if self._decoder.ended:
                return None
        return self._decoder.finish()

    def close(self) -> None:
        """Stop reading and close the connection (the service stops the generation)."""
        if not self.closed:
            self.closed = True
            self.response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            with contextlib.suppress(Exception):
                self.close()


class AsyncStream(Generic[T]):
    """The chunks of a streamed answer, as they arrive. Use it in an ``async with`` block, or ``aclose()`` it."""

    def __init__(self, response: httpx.Response, call: Call) -> None:
        self.response = response
        self.request_id: str | None = response.headers.get(REQUEST_ID_HEADER)
        """The service's id of this request."""
        self._decoder = Decoder(call, self.request_id)
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self.closed = False

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        if self.closed:
            raise StopAsyncIteration
        try:
            item = await self._next()
        except httpx.TransportError as exc:
            await self.aclose()
            raise transport_error(exc, self.response.request.url) from exc
        except BaseException:  # cancellation included: the connection is closed, the service frees the place
            await self.aclose()
            raise
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        return cast(T, item)

    async def _next(self) -> JsonObject | None:
        if self._decoder.ended:
            return None
        async for line in self._lines:
            item = self._decoder.feed(line)
            if item is not None:
                return item
            if self._decoder.ended:
                return None
        return self._decoder.finish()

    async def aclose(self) -> None:
        """Stop reading and close the connection (the service stops the generation)."""
        if not self.closed:
            self.closed = True
            await self.response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
