"""A request on a raw loopback connection, for tests that hang up at a moment of their choosing."""

from __future__ import annotations

import socket
from typing import Any

import orjson


def post_raw(host: str, port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> socket.socket:
    """Send ``POST path`` with a JSON body and return the open connection (the caller closes it)."""
    data = orjson.dumps(body)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}"
    conn = socket.create_connection((host, port))
    conn.sendall(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return conn
