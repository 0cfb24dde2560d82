"""Request id and the pipeline's headers on every response (pure ASGI, so it costs next to nothing)."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Shared-Ollama-Request-Id"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
_SANE = re.compile(rb"^[A-Za-z0-9._:\-]{1,64}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Keeps a sane client-sent request id, else makes one; exposes it as ``request.state.request_id``.

    ``request.state.response_headers`` is a dict the pipeline fills while it works (tenant, in-flight limit
    and remaining places, queue wait); its contents go out with the response's headers, errors included.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == _HEADER_KEY:
                if _SANE.match(value):
                    request_id = value.decode()
                break
        request_id = request_id or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        extra: dict[str, str] = {}
        state["response_headers"] = extra
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == _HEADER_KEY for k, _ in headers):
                    headers.append((_HEADER_KEY, raw_id))
                headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
