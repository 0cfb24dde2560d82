"""Who may use the embedded engine: with a token configured (``SHARED_OLLAMA_ENGINE_TOKEN``, a secret the
gateway makes for each engine it starts), every request must carry ``Authorization: Bearer <token>`` or gets a
401; the engine's loopback port is otherwise open to every user of the machine, admin operations included
(``/api/copy``, ``/api/delete``, ``/api/pull``, ``/api/create``). Without a token (``shared-ollama engine``
started by hand) the engine is open, as Ollama is.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

_REFUSAL = b'{"error":"unauthorized: this engine serves its gateway only (Authorization: Bearer <token>)"}'


def presented_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The bearer token of a request's raw ASGI headers, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else None
    return None


class RequireToken:
    """ASGI middleware: HTTP requests without the bearer token get a 401 before any route runs."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("the engine token must not be empty")
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            presented = presented_token(scope["headers"]) or b""
            if not hmac.compare_digest(presented, self._token):
                await _refuse(send)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_REFUSAL)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": _REFUSAL})
