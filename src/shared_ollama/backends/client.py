"""One async HTTP client to an Ollama-API server (a real Ollama or the embedded engine).

The hot path: one pooled aiohttp session, request bodies serialised once with orjson, stream lines forwarded
as bytes without parsing. Transport and engine errors are translated into the service's errors here, at the
boundary, so nothing above this module sees aiohttp.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from shared_ollama.backends.urls import masked_url
from shared_ollama.errors import (
    BackendError,
    BackendUnavailable,
    InsufficientStorage,
    InvalidRequest,
    ModelNotFound,
    RequestTimeout,
    RequestTooLarge,
    SharedOllamaError,
)
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
_RETRY_AFTER_DOWN = 2.0
T = TypeVar("T")
_JSON_HEADERS = {"Content-Type": "application/json"}


def _engine_message(body: bytes, status: int) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or f"engine answered HTTP {status}"
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return parsed["error"]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return str(parsed["error"].get("message") or parsed["error"])
    return f"engine answered HTTP {status}"


def error_from_status(status: int, body: bytes) -> SharedOllamaError:
    """The service error for an engine's non-2xx answer."""
    message = _engine_message(body, status)
    if status == 404:
        return ModelNotFound(message)
    if status in (400, 422):
        return InvalidRequest(message)
    if status == 503:
        return BackendUnavailable(message, retry_after=_RETRY_AFTER_DOWN)
    if status == 413:
        return InvalidRequest(message)
    error = BackendError(f"engine error (HTTP {status}): {message}")
    error.upstream_status = status
    return error


def _no_such_endpoint(status: int, body: bytes) -> bool:
    """True for a router's "no such route" (Ollama: 404 with the text "404 page not found", or 405), as opposed
    to an endpoint's own JSON error such as ``{"error": "model 'x' not found"}``."""
    if status in (405, 501):
        return True
    if status != 404:
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return not isinstance(error, str) or "page not found" in error


async def pooled_call(call: Callable[[], Awaitable[T]], unreachable: str, who: str) -> T:
    """``call()`` through a pooled aiohttp session, once more when a kept-alive connection turned out to be closed;
    transport failures become ``BackendUnavailable`` (``unreachable``: the message's start, naming the server) and
    a timeout ``RequestTimeout`` (``who`` did not answer in time). Shared by every engine and host client."""
    try:
        try:
            return await call()
        except aiohttp.ServerDisconnectedError:
            return await call()
    except SharedOllamaError:
        raise
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        raise BackendUnavailable(f"{unreachable}: {exc.__class__.__name__}", retry_after=_RETRY_AFTER_DOWN) from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"{who} did not answer in time") from exc


class EngineApi(Protocol):
    """What the service asks of "the engine": ``EngineClient`` for one engine, ``service/fleet/routing.py``'s
    ``FleetClient`` for a fleet of hosts."""

    async def request(self, method: str, path: str, body: JsonDict | None = None) -> bytes: ...

    async def request_json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict: ...

    async def count_tokens(self, model: str, body: JsonDict) -> int | None: ...

    async def upload(self, path: str, chunks: AsyncIterator[bytes], length: int | None = None) -> int: ...

    def stream(self, path: str, body: JsonDict) -> AbstractAsyncContextManager[AsyncIterator[bytes]]: ...


class EngineClient:
    """Pooled client for one engine base URL."""

    def __init__(
        self,
        base_url: str,
        settings: Settings,
        is_available: Callable[[], bool] | None = None,
        token: Callable[[], str | None] | None = None,
    ):
        """``token`` gives the engine's bearer token now (a managed embedded engine has a new one per start)."""
        self.base_url = base_url.rstrip("/")
        self._settings = settings
        self._is_available = is_available or (lambda: True)
        self._token = token or (lambda: None)
        self._session: aiohttp.ClientSession | None = None
        self.has_tokenizer: bool | None = None
        """Whether the engine counts tokens (``POST /api/tokenize``): None until a call has told."""

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._settings.engine_max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._settings.engine_connect_timeout,
            sock_read=self._settings.engine_request_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            auto_decompress=False,
            read_bufsize=1 << 20,  # long NDJSON lines (a generate's final context) fit
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise BackendUnavailable("engine client is not open")
        return self._session

    def _headers(self) -> dict[str, str]:
        token = self._token()
        return {**_JSON_HEADERS, "Authorization": f"Bearer {token}"} if token else _JSON_HEADERS

    def _check_available(self) -> None:
        if not self._is_available():
            raise BackendUnavailable(
                "the engine is unavailable (being restarted, or not answering its health probes)",
                retry_after=_RETRY_AFTER_DOWN,
            )

    async def _with_retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call``; retry once when a pooled keep-alive connection turned out to be closed."""
        self._check_available()
        return await pooled_call(call, f"engine unreachable at {masked_url(self.base_url)}", "the engine")

    async def request(self, method: str, path: str, body: JsonDict | None = None) -> bytes:
        """Non-streamed call; returns the raw 2xx body or raises the translated error."""
        data = orjson.dumps(body) if body is not None else None

        async def call() -> bytes:
            async with self.session.request(method, self.base_url + path, data=data, headers=self._headers()) as resp:
                payload = await resp.read()
                if resp.status >= 300:
                    raise error_from_status(resp.status, payload)
                return payload

        result: bytes = await self._with_retry(call)
        return result

    async def request_json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        payload = await self.request(method, path, body)
        parsed = orjson.loads(payload) if payload else {}
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    async def count_tokens(self, model: str, body: JsonDict) -> int | None:
        """Tokens of ``body`` (``{"prompt": ...}`` or ``{"messages": [...], "system": ...}``) for ``model``,
        counted by the engine's own tokenizer; None when the engine has no tokenizer endpoint (real Ollama).
        """
        if self.has_tokenizer is False:
            return None
        data = orjson.dumps({**body, "model": model})

        async def call() -> tuple[int, bytes]:
            url = self.base_url + "/api/tokenize"
            async with self.session.post(url, data=data, headers=self._headers()) as resp:
                return resp.status, await resp.read()

        status, payload = await self._with_retry(call)
        if _no_such_endpoint(status, payload):
            self.has_tokenizer = False
            return None
        if status >= 300:
            raise error_from_status(status, payload)
        self.has_tokenizer = True
        try:
            count = orjson.loads(payload).get("count")
        except (orjson.JSONDecodeError, AttributeError):
            count = None
        if not isinstance(count, int) or isinstance(count, bool):
            raise BackendError("the engine sent an unreadable token count")
        return count

    async def upload(self, path: str, chunks: AsyncIterator[bytes], length: int | None = None) -> int:
        """POST ``chunks`` as a streamed body of ``length`` bytes when known (never held whole, never retried: it
        cannot be sent twice); returns the engine's 2xx status. An error raised by ``chunks`` (the upload's own
        client) is raised as it is; an engine that answers before reading everything (it has the blob) is
        answered as it is."""
        self._check_available()
        failure: list[Exception] = []

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except Exception as exc:  # not a cancellation: aiohttp stops sending once the engine has answered
                failure.append(exc)
                raise

        headers = {**self._headers(), "Content-Type": "application/octet-stream"}
        if length is not None:  # the engine can refuse a blob too large for its limit or its disk before any byte
            headers["Content-Length"] = str(length)
        try:
            async with self.session.post(self.base_url + path, data=body(), headers=headers) as resp:
                payload = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if failure:
                raise failure[0] from None
            if isinstance(exc, TimeoutError):
                raise RequestTimeout("the engine did not answer in time") from exc
            raise BackendUnavailable(
                f"engine unreachable at {masked_url(self.base_url)}: {exc.__class__.__name__}",
                retry_after=_RETRY_AFTER_DOWN,
            ) from exc
        if failure:
            raise failure[0]
        if resp.status == 413:
            raise RequestTooLarge(_engine_message(payload, resp.status))
        if resp.status == 507:
            raise InsufficientStorage(_engine_message(payload, resp.status))
        if resp.status >= 300:
            raise error_from_status(resp.status, payload)
        return resp.status

    @asynccontextmanager
    async def stream(self, path: str, body: JsonDict) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streamed call; yields an iterator of raw NDJSON lines (each ending in a newline).

        Errors before the first byte raise here; errors mid-stream raise from the iterator as service errors.
        Leaving the context closes the connection, which cancels generation in the engine.
        """
        data = orjson.dumps(body)

        async def open_response() -> aiohttp.ClientResponse:
            resp = await self.session.post(self.base_url + path, data=data, headers=self._headers())
            if resp.status >= 300:
                payload = await resp.read()
                resp.release()
                raise error_from_status(resp.status, payload)
            return resp

        resp: aiohttp.ClientResponse = await self._with_retry(open_response)
        try:
            yield self._lines(resp)
        finally:
            resp.close()

    async def _lines(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for line in resp.content:
                if line.strip():
                    yield line if line.endswith(b"\n") else line + b"\n"
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise BackendUnavailable(
                f"the engine connection broke mid-stream: {exc.__class__.__name__}",
                retry_after=_RETRY_AFTER_DOWN,
            ) from exc
        except TimeoutError as exc:
            raise RequestTimeout("the engine stopped sending tokens") from exc
        except ValueError as exc:
            raise BackendError(f"the engine sent an unreadable stream line: {exc}") from exc
