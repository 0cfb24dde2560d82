"""The ``http_get`` tool: fetch a text page from a host on the admin's allow-list. Each hop's host is resolved
once, vetted (``ssrf.py``) and connected to at that address only (no second lookup: no DNS rebinding);
redirects are followed by hand, each target checked the same way; time and size are bounded."""

from __future__ import annotations

import asyncio
import codecs
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from shared_ollama.service.agents.tooling import ToolOutcome, ToolSpec
from shared_ollama.service.agents.tools.ssrf import Refused, check_url, normalise_host, parse_allow_list, vet_addresses

Resolve = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the IP addresses of the host."""

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
ERROR_BODY_CHARS = 200
TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/x-ndjson",
        "application/csv",
    }
)

SPEC = ToolSpec(
    name="http_get",
    description=(
        "Fetch a web page or text document by URL (HTTP GET) and return its text. Only hosts the administrator "
        "allowed can be fetched; the text may be cut if it is long."
    ),
    parameters={
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "description": "The full http:// or https:// URL to fetch.",
                "minLength": 1,
                "maxLength": 2048,
            }
        },
        "required": ["url"],
        "additionalProperties": False,
    },
)


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (one lookup)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"host {host} could not be resolved") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_text(mimetype: str) -> bool:
    return mimetype.startswith("text/") or mimetype in TEXT_TYPES or mimetype.endswith(("+json", "+xml"))


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for one call: answers only with the addresses already vetted for a host."""

    def __init__(self) -> None:
        self._pins: dict[str, list[str]] = {}

    def pin(self, host: str, addresses: list[str]) -> None:
        self._pins[normalise_host(host)] = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self._pins.get(normalise_host(host))
        if not addresses:
            raise OSError(f"host {host} was not vetted")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


class HttpGet:
    """The tool, configured by the allow-list (``agent_http_allow_hosts``); ``enabled`` is False when it is empty."""

    def __init__(self, *, allow_hosts: str, max_bytes: int, timeout: float, resolve: Resolve | None = None) -> None:
        self._rules = parse_allow_list(allow_hosts)
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._resolve = resolve or system_resolve

    @property
    def enabled(self) -> bool:
        return bool(self._rules)

    async def __call__(self, arguments: dict[str, Any]) -> ToolOutcome:
        url = str(arguments["url"]).strip()
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                return await self._fetch(url)
        except TimeoutError:
            if not deadline.expired():
                raise
            return ToolOutcome(f"http_get: {url} timed out after {self._timeout:g} s", error=True)
        except Refused as exc:
            return ToolOutcome(f"http_get: refused: {exc}", error=True)
        except (aiohttp.ClientError, OSError) as exc:
            return ToolOutcome(f"http_get: could not fetch {url}: {type(exc).__name__}: {exc}", error=True)

    async def _fetch(self, url: str) -> ToolOutcome:
        resolver = PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:
            current: str | URL = url
            for _hop in range(MAX_REDIRECTS + 1):
                target = check_url(current, self._rules)
                host = target.url.raw_host or ""
                addresses = [target.host] if _is_ip(target.host) else await self._resolve(host, target.port)
                resolver.pin(host, vet_addresses(target, addresses))
                async with session.get(
                    target.url, allow_redirects=False, headers={"Accept": "text/*, application/json;q=0.9"}
                ) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            return ToolOutcome(f"http_get: {target.url} redirects without a Location", error=True)
                        try:
                            current = target.url.join(URL(location))
                        except ValueError as exc:
                            raise Refused(f"{target.url} redirects to an invalid URL") from exc
                        continue
                    return await self._read(resp, target.url)
        return ToolOutcome(f"http_get: {url} redirects more than {MAX_REDIRECTS} times", error=True)

    async def _read(self, resp: aiohttp.ClientResponse, url: URL) -> ToolOutcome:
        mimetype = resp.content_type if "Content-Type" in resp.headers else ""
        if resp.status >= 400:
            snippet = " ".join(_decode(await resp.content.read(ERROR_BODY_CHARS * 4), resp.charset).split())
            detail = f": {snippet[:ERROR_BODY_CHARS]}" if snippet and is_text(mimetype) else ""
            return ToolOutcome(
                f"http_get: {url} answered HTTP {resp.status} {resp.reason or ''}".rstrip() + detail,
                error=True,
                meta={"status": resp.status},
            )
        if not is_text(mimetype):
            shown = mimetype or "no content type"
            return ToolOutcome(f"http_get: {url} returned {shown}, not text; only text can be read", error=True)
        body = bytearray()
        while len(body) <= self._max_bytes:
            chunk = await resp.content.read(self._max_bytes + 1 - len(body))
            if not chunk:
                break
            body += chunk
        truncated = len(body) > self._max_bytes
        text = _decode(bytes(body[: self._max_bytes]), resp.charset)
        meta = {"status": resp.status, "url": str(url), "bytes": min(len(body), self._max_bytes)}
        if truncated:
            meta["body_truncated"] = True
            text += f"\n[truncated] (the body is longer than {self._max_bytes} bytes)"
        return ToolOutcome(f"HTTP {resp.status} {mimetype} {url}\n\n{text}", meta=meta)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _decode(data: bytes, charset: str | None) -> str:
    try:
        codecs.lookup(charset or "utf-8")
    except LookupError:
        charset = "utf-8"
    return data.decode(charset or "utf-8", errors="replace")
