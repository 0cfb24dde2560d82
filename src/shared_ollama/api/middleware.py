"""Request id, the pipeline's headers and the request's accounting record (pure ASGI: it costs next to nothing).

For every request the middleware keeps a sane client-sent request id (else makes one), exposes it as
``request.state.request_id`` and in the log context, and starts a ``RequestRecord`` that the pipeline fills in
(``request.state.record``; its surface is ``surfaces.surface_of(path)``). ``request.state.response_headers`` is
a dict the pipeline fills while it works (tenant, in-flight limit and remaining places, queue wait); it goes
out with the response's headers, errors included. When the last
byte has been sent (or the client went away), the record gets its status, route and latency and goes to the
app's telemetry — unless the path is an operational one (health, metrics, docs, the status page), which would
only drown the figures in polling. A client that went away before its answer is recorded once, one way:
status 499, code ``client_closed``; a stream whose final frame was sent (``web.mark_answered``) was answered,
even when its client hangs up before the chunked body's end. A request no route matched is recorded under a
bounded template of its method and path (``unmatched_route``), so a scan of random paths cannot grow the
metrics' label sets.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared_ollama.api.surfaces import surface_of
from shared_ollama.logs import REQUEST_ID
from shared_ollama.service.fleet.routing import TARGET_HOST
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.web import ANSWERED, CLIENT_CLOSED_STATUS

REQUEST_ID_HEADER = "X-Shared-Ollama-Request-Id"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,64}$")
_NOT_RECORDED = frozenset(
    {
        "/",
        "/metrics",
        "/dashboard",
        "/favicon.ico",
        "/api/docs",
        "/api/openapi.json",
        "/api/version",
        "/api/v1/health",
        "/api/v1/metrics",
        "/api/v1/queue/stats",
        "/api/v1/cache/stats",
        "/api/v1/system/model-profile",
        "/api/v1/performance/stats",
        "/api/v1/analytics",
        "/api/v1/usage",
        "/api/v1/engines",
    }
)
_ADMIN_PREFIX = "/api/v1/admin/"
"""The admin API: operations, kept in the audit log, not counted as traffic."""
CLIENT_CLOSED = "client_closed"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SEGMENT = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,23}$")
MAX_UNMATCHED_ROUTES = 64
"""Distinct templates of unmatched requests recorded as such; past this, ``<METHOD> /(other)``."""


def unmatched_route(method: str, path: str) -> str:
    """``<METHOD> <template>`` for a request no route matched: at most the first two path segments, a segment
    that does not look like a name (an id, a long token) as ``*``, a deeper path ending in ``/…``; never the
    query string."""
    parts = path.split("/")[1:]
    kept = [part if not part or _SEGMENT.match(part) else "*" for part in parts[:2]]
    template = "/" + "/".join(kept) + ("/…" if len(parts) > 2 else "")
    return f"{method if method in _METHODS else 'OTHER'} {template}"


def new_request_id() -> str:
    return uuid.uuid4().hex


class _RequestIds:
    """Unique ids without a system call per request: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return f"{self._prefix}{self._next():016x}"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._new_id = _RequestIds()
        self._unmatched: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for key, value in scope["headers"]:
            if key == _HEADER_KEY:
                if _SANE.match(value):
                    request_id = value.decode()
                break
        request_id = request_id or self._new_id()
        path: str = scope["path"]
        record = RequestRecord(ts=time.time(), request_id=request_id, surface=surface_of(path), route=path)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["record"] = record
        state["started"] = started
        extra: dict[str, str] = {}
        state["response_headers"] = extra
        raw_id = request_id.encode()
        finished = False

        async def send_with_id(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = list(message.get("headers", []))
                if not any(k.lower() == _HEADER_KEY for k, _ in headers):
                    headers.append((_HEADER_KEY, raw_id))
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                message["headers"] = headers
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        token = REQUEST_ID.set(request_id)
        host_token = TARGET_HOST.set(None)  # the engine host a request asks for is its own (set by ``deps``)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # rendered as a 500 by the outermost error handler, outside this middleware
            record.status, record.code, finished = 500, "internal_error", True
            raise
        finally:
            REQUEST_ID.reset(token)
            TARGET_HOST.reset(host_token)
            if path not in _NOT_RECORDED and not path.startswith(_ADMIN_PREFIX):  # admin actions: the audit log
                self._finish(scope, record, started, finished)

    def _finish(self, scope: Scope, record: RequestRecord, started: float, finished: bool) -> None:
        record.latency = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None)
        record.route = route or self._unmatched_route(scope)
        answered = finished or scope.get("state", {}).get(ANSWERED, False)  # a stream's final frame went out
        if not answered or record.status == CLIENT_CLOSED_STATUS:  # gone before its answer, streamed or not
            record.status, record.code = CLIENT_CLOSED_STATUS, CLIENT_CLOSED
        telemetry = getattr(getattr(scope.get("app"), "state", None), "telemetry", None)
        if telemetry is not None:
            telemetry.record(record)

    def _unmatched_route(self, scope: Scope) -> str:
        route = unmatched_route(scope.get("method", ""), scope["path"])
        if route not in self._unmatched:
            if len(self._unmatched) >= MAX_UNMATCHED_ROUTES:
                return route.split(" ", 1)[0] + " /(other)"
            self._unmatched.add(route)
        return route
