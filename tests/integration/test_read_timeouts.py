"""Slow clients cannot hold connections: a request head or body that does not arrive in time is answered 408 and
its connection closed, while other clients are served meanwhile.

The gateway runs under uvicorn with exactly the configuration ``shared-ollama serve`` uses
(``http_server.server_config``), on a loopback port, with small timeouts; the pytest timeout is the only guard.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from shared_ollama.http_server import server_config
from shared_ollama.settings import Settings
from tests.integration.conftest import chat

pytestmark = pytest.mark.timeout(60)


async def _answer_then_close(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await reader.read()


async def test_a_half_sent_request_head_gets_408_and_is_closed_while_others_are_served(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl")  # and nothing more
    await writer.drain()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}", timeout=30) as client:
        normal = await client.post("/api/chat", json=chat())
        assert normal.status_code == 200
    answer = await _answer_then_close(reader)  # returns only once the server has closed the connection
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in answer
    assert answer.endswith(b'"code":"header_timeout"}')
    writer.close()


async def test_a_silent_connection_is_closed(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    assert await _answer_then_close(reader) == b"", "closed without a word: no request was begun"
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"GET /api/version HTTP/1.1\r\nHost: gateway\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK\r\n")
    rest = await _answer_then_close(reader)  # the body, then nothing: closed once idle for keep_alive_timeout
    assert b"HTTP/1.1" not in rest, "no second answer: the server closed the idle connection"
    writer.close()


def test_idle_connections_outlive_the_clients_own_keep_alive_by_default() -> None:
    config = server_config(Settings(_env_file=None), app=None)
    assert config.timeout_keep_alive > httpx.Limits().keepalive_expiry, "else a client's request may race the close"


async def test_a_keep_alive_connection_still_gets_408_for_a_late_second_head(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"GET /api/version HTTP/1.1\r\nHost: gateway\r\n\r\n")
    await writer.drain()
    first = await reader.readuntil(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.write(b"GET /api/version HTTP/1.1\r\nHo")
    await writer.drain()
    rest = await _answer_then_close(reader)
    assert b"HTTP/1.1 408 Request Timeout\r\n" in rest
    writer.close()


async def test_a_slow_body_gets_408_body_timeout_and_is_closed(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    body = orjson.dumps(chat())
    head = (
        "POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[:10])  # the rest never comes
    await writer.drain()
    answer = await _answer_then_close(reader)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    error = orjson.loads(payload)
    assert error["code"] == "body_timeout"
    assert error["error"] == "the request body did not arrive within 0.5 s"
    writer.close()


async def test_a_body_trickled_to_an_endpoint_that_never_reads_it_is_cut_off(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(b"GET /api/version HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\n")
    closed = asyncio.create_task(_answer_then_close(reader))
    for _ in range(2000):  # the client's own pace: one byte every 10 ms, for as long as it is let
        if closed.done():
            break
        try:
            writer.write(b"x")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.01)
    answer = await closed  # the endpoint answered without reading the body; then the connection was closed
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()
