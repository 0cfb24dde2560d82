"""The gateway's HTTP server: the uvicorn configuration ``serve`` runs, and its request-head read timeout.

uvicorn (httptools) bounds the idle time between requests (keep-alive) but not the time a client takes to send
a request's head or body: a connection that trickles them would be held for ever. ``ReadTimeoutProtocol``
starts one timer per request head (``loop.call_later``: the whole cost on the hot path) and cancels it when the
head is complete; a head still incomplete after ``header_timeout`` seconds is answered ``408 Request Timeout``
and the connection closed. The body is bounded where it is read (``api/http.py``: ``408 body_timeout`` after
``body_timeout``); a second timer here, a little later, closes the connection of a body still incomplete then
(one sent to an endpoint that never reads it, where nothing else would notice). A blob upload
(``STREAMED_UPLOADS``) may take as long as it needs while bytes keep arriving: its connection is closed only after
``body_timeout`` without one.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared_ollama.settings import Settings

_TIMEOUT_BODY = b'{"error":"the request head was not received in time","code":"header_timeout"}'
REQUEST_HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n"
    b"connection: close\r\n"
    b"\r\n" + _TIMEOUT_BODY
)
"""What a connection whose request head is late receives before it is closed."""
BODY_GRACE = 1.0
"""Seconds past ``body_timeout`` before a connection with an incomplete body is closed: the endpoint reading
the body answers ``408 body_timeout`` first."""
STREAMED_UPLOADS = ("/api/blobs/",)
"""Paths whose bodies (model files, gigabytes) may take as long as they need: their limit is ``body_timeout``
without a byte arriving, not for the whole body."""


class ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head or body is not complete in time."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._idle_body = False
        self._last_body = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a complete head is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_done()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        self._idle_body = str(self.scope.get("path", "")).startswith(STREAMED_UPLOADS)
        self._last_body = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_timeout + BODY_GRACE, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        if self._idle_body:
            self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:  # the connection is another protocol's from here
        self._disarm()
        self._body_done()
        super().handle_websocket_upgrade()

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timed_out(self) -> None:
        self._body_timer = None
        quiet = self.loop.time() - self._last_body
        if self._idle_body and quiet < self.body_timeout + BODY_GRACE:  # bytes still arriving: wait on
            self._body_timer = self.loop.call_later(self.body_timeout + BODY_GRACE - quiet, self._body_timed_out)
            return
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # an answer is still being sent: close once it is complete
            return
        if self._in_head:  # part of a head arrived: say why; a connection that sent nothing is just closed
            self.transport.write(REQUEST_HEAD_TIMEOUT)
        self.transport.close()


def protocol_for(settings: Settings) -> type[ReadTimeoutProtocol]:
    """The protocol class with this configuration's header and body timeouts."""
    timeouts = {"header_timeout": settings.header_timeout, "body_timeout": settings.body_timeout}
    return type("ReadTimeoutProtocol", (ReadTimeoutProtocol,), timeouts)


def server_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``shared-ollama serve`` runs ``app`` with (``overrides`` for tests)."""
    options: dict[str, Any] = {
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's own lines go through the JSON handlers too
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_timeout,  # uvicorn's own 5 s equals httpx's: requests raced it
        "loop": "uvloop",
        "http": protocol_for(settings),
        "lifespan": "on",  # a failed start-up stops the process (not "lifespan unsupported")
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
