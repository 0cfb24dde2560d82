"""The http_get tool against a loopback aiohttp server: the allow-list, the SSRF guard on every hop (loopback
refused unless listed by name), redirects by hand, the size and time limits, text-only bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from shared_ollama.service.agents.tools.http_get import HttpGet

BIG = 5000


@dataclass
class Loopback:
    port: int
    hits: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[Loopback]:
    state = Loopback(port=0)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from loopback; host={request.host}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="a" * BIG)

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"partial ")
        await state.release.wait()
        return resp

    async def binary(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01\x02", content_type="application/octet-stream")

    async def json(request: web.Request) -> web.Response:
        return web.json_response({"answer": 42})

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    @web.middleware
    async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        state.hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    for path, handler in [
        ("/hello", hello),
        ("/big", big),
        ("/slow", slow),
        ("/bin", binary),
        ("/json", json),
        ("/missing", missing),
        ("/redirect", redirect),
        ("/loop", loop),
    ]:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def tool(allow: str, *, max_bytes: int = 100_000, timeout: float = 10.0, **kwargs: object) -> HttpGet:
    return HttpGet(allow_hosts=allow, max_bytes=max_bytes, timeout=timeout, **kwargs)  # type: ignore[arg-type]


async def test_a_listed_loopback_ip_and_port_is_fetched(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}")({"url": server.url("/hello")})
    assert outcome.error is False
    assert outcome.content == (
        f"HTTP 200 text/plain {server.url('/hello')}\n\nhello from loopback; host=127.0.0.1:{server.port}"
    )
    assert outcome.meta["status"] == 200


async def test_a_listed_localhost_is_fetched_with_its_host_header(server: Loopback) -> None:
    outcome = await tool(f"localhost:{server.port}")({"url": server.url("/hello", "localhost")})
    assert outcome.error is False
    assert outcome.content.endswith(f"host=localhost:{server.port}")


@pytest.mark.parametrize("allow", ["example.com", "localhost:{port}", "127.0.0.1:{other}"])
async def test_a_reachable_but_unlisted_host_is_refused_before_any_request(server: Loopback, allow: str) -> None:
    allow = allow.format(port=server.port, other=server.port + 1 if server.port < 65535 else 1)
    outcome = await tool(allow)({"url": server.url("/hello")})
    assert outcome.error is True
    assert f"refused: host 127.0.0.1:{server.port} is not in the allow-list" in outcome.content
    assert server.hits == []


class FakeDns:
    """Resolves names under example.test to the loopback server, counting lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return ["127.0.0.1"]


async def test_a_wildcard_host_resolving_to_loopback_is_refused(server: Loopback) -> None:
    dns = FakeDns()
    outcome = await tool(f"*.example.test:{server.port}", resolve=dns)(
        {"url": server.url("/hello", "docs.example.test")}
    )
    assert outcome.error is True
    assert "docs.example.test resolves to 127.0.0.1, a loopback address" in outcome.content
    assert server.hits == []


async def test_a_name_listed_exactly_connects_to_the_one_vetted_address(server: Loopback) -> None:
    """The name exists only in the fake resolver: the connection can only have used the address it returned,
    looked up once (no second lookup a rebinding DNS server could answer differently)."""
    dns = FakeDns()
    fetch = tool(f"docs.example.test:{server.port}", resolve=dns)
    outcome = await fetch({"url": server.url("/hello", "docs.example.test")})
    assert outcome.error is False
    assert outcome.content.endswith(f"host=docs.example.test:{server.port}")
    assert dns.lookups == ["docs.example.test"]


@pytest.mark.parametrize("target", ["http://localhost:{port}/hello", "http://169.254.169.254/latest/meta-data/"])
async def test_a_redirect_to_an_unlisted_host_is_refused(server: Loopback, target: str) -> None:
    to = target.format(port=server.port)
    outcome = await tool(f"127.0.0.1:{server.port}")({"url": server.url(f"/redirect?to={to}")})
    assert outcome.error is True
    assert "refused: host" in outcome.content
    assert "is not in the allow-list" in outcome.content
    assert server.hits == ["/redirect"]


async def test_redirects_within_the_list_are_followed(server: Loopback) -> None:
    fetch = tool(f"127.0.0.1:{server.port},localhost:{server.port}")
    across = await fetch({"url": server.url(f"/redirect?to={server.url('/hello', 'localhost')}")})
    assert across.error is False
    assert across.content.endswith(f"host=localhost:{server.port}")
    relative = await fetch({"url": server.url("/redirect?to=/json")})
    assert relative.error is False
    assert relative.content == f'HTTP 200 application/json {server.url("/json")}\n\n{{"answer": 42}}'
    assert server.hits == ["/redirect", "/hello", "/redirect", "/json"]


async def test_more_than_three_redirects_are_an_error(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}")({"url": server.url("/loop")})
    assert (outcome.error, outcome.content) == (True, f"http_get: {server.url('/loop')} redirects more than 3 times")
    assert server.hits == ["/loop"] * 4


async def test_an_oversize_body_is_cut_and_says_so(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}", max_bytes=1000)({"url": server.url("/big")})
    assert outcome.error is False
    body = outcome.content.split("\n\n", 1)[1]
    assert body == "a" * 1000 + "\n[truncated] (the body is longer than 1000 bytes)"
    assert outcome.meta["body_truncated"] is True


async def test_a_slow_body_times_out(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}", timeout=0.3)({"url": server.url("/slow")})
    assert (outcome.error, outcome.content) == (True, f"http_get: {server.url('/slow')} timed out after 0.3 s")


async def test_a_non_text_body_is_refused_naming_its_type(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}")({"url": server.url("/bin")})
    assert outcome.error is True
    assert "returned application/octet-stream, not text" in outcome.content


async def test_an_error_status_is_a_tool_error_with_a_short_body(server: Loopback) -> None:
    outcome = await tool(f"127.0.0.1:{server.port}")({"url": server.url("/missing")})
    assert (outcome.error, outcome.content) == (
        True,
        f"http_get: {server.url('/missing')} answered HTTP 404 Not Found: no such page",
    )


async def test_a_closed_port_is_a_tool_error(server: Loopback) -> None:
    closed = server.port + 1 if server.port < 65535 else 1
    outcome = await tool(f"127.0.0.1:{closed}")({"url": f"http://127.0.0.1:{closed}/"})
    assert outcome.error is True
    assert outcome.content.startswith(f"http_get: could not fetch http://127.0.0.1:{closed}/")
