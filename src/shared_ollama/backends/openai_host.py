"""A client for an ``openai`` host (vLLM, llama-server, SGLang, a router in front of them) that speaks native.

``OpenAIHostClient`` takes the native (Ollama) bodies the gateway sends every engine, translates them
(``protocol/upstream_openai.py``), sends them to the host's ``/v1/chat/completions``, ``/v1/completions`` or
``/v1/embeddings``, and gives back native JSON, or native NDJSON lines for a stream
(``protocol/upstream_openai_stream.py``). Every answer carries the names of the native fields and options the host
has no equivalent for (``dropped``), for a response header.

Errors are the service's, translated here: an upstream 4xx keeps its message (400/422 ``invalid_request``, 404
``model_not_found``), a 429 or 503 is ``backend_unavailable`` with ``Retry-After``, anything else ``backend_error``;
no connection is ``backend_unavailable``, a read timeout ``request_timeout``. A stream that fails after its first
line raises the same errors from its iterator. The API key goes upstream as a Bearer token and appears nowhere else:
not in errors, not in ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from shared_ollama.backends.client import error_from_status, pooled_call
from shared_ollama.backends.urls import masked_url
from shared_ollama.errors import (
    BackendError,
    BackendUnavailable,
    FeatureNotImplemented,
    RequestTimeout,
    SharedOllamaError,
)
from shared_ollama.protocol.upstream_openai import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    chat_answer,
    chat_request,
    embed_answer,
    embed_request,
    generate_answer,
    generate_request,
    is_chat_body,
)
from shared_ollama.protocol.upstream_openai_pass import PassThrough
from shared_ollama.protocol.upstream_openai_stream import ChatStreamToNative, GenerateStreamToNative

JsonDict = dict[str, Any]
T = TypeVar("T")
_RETRY_AFTER = 2.0


@dataclass(frozen=True)
class HostAnswer:
    """A non-streamed answer: the native JSON bytes and the native fields the host had no equivalent for."""

    body: bytes
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class HostStream:
    """A streamed answer: native NDJSON lines (each ending in a newline) and the dropped field names."""

    lines: AsyncIterator[bytes]
    dropped: tuple[str, ...]


def _upstream_error(status: int, payload: bytes, retry_after: str | None) -> SharedOllamaError:
    if status in (429, 503):
        try:
            wait = float(retry_after) if retry_after else _RETRY_AFTER
        except ValueError:
            wait = _RETRY_AFTER
        error = error_from_status(503, payload)
        return BackendUnavailable(f"the upstream host is busy: {error.message}", retry_after=max(wait, 0.0))
    return error_from_status(status, payload)


def _json_object(payload: bytes) -> JsonDict:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BackendError("the upstream host sent an answer that is not JSON") from exc
    if not isinstance(parsed, dict):
        raise BackendError("the upstream host sent an answer that is not a JSON object")
    return parsed


def _readable(translate: Callable[[], T]) -> T:
    """``translate()``, an upstream answer turned native; an answer of an unexpected shape (a field of the wrong
    type, a value out of range) is a ``BackendError`` naming the problem, never an unhandled exception."""
    try:
        return translate()
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError) as exc:
        raise BackendError(f"the upstream host sent an answer that could not be read: {exc}") from None


def _line(native: JsonDict) -> bytes:
    return orjson.dumps(native) + b"\n"


class OpenAIHostClient:
    """One OpenAI-compatible host at ``base_url`` (with or without its ``/v1``), through the caller's ``session``
    (the caller opens and closes it, and sets its timeouts). ``api_key`` goes as a Bearer token; credentials in the
    URL instead go as Basic authentication (not both: ``ValueError``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        session: aiohttp.ClientSession,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        base = base_url.rstrip("/")
        parts = urlsplit(base)
        if api_key and (parts.username or parts.password):
            raise ValueError(f"{masked_url(base)}: give credentials in the URL (Basic) or an API key, not both")
        self.base_url = base[: -len("/v1")] if base.endswith("/v1") else base
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session = session
        self._clock = clock

    def __repr__(self) -> str:
        return f"OpenAIHostClient({masked_url(self.base_url)!r})"

    async def _with_retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``call``; once more when a pooled keep-alive connection turned out to be closed."""
        return await pooled_call(call, f"upstream host unreachable at {masked_url(self.base_url)}", "the upstream host")

    async def _send(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        data = orjson.dumps(body) if body is not None else None

        async def call() -> bytes:
            url = self.base_url + path
            async with self._session.request(method, url, data=data, headers=self._headers) as resp:
                payload = await resp.read()
                if resp.status >= 300:
                    raise _upstream_error(resp.status, payload, resp.headers.get("Retry-After"))
                return payload

        return _json_object(await self._with_retry(call))

    # ------------------------------------------------------------ non-streamed

    async def chat(self, native: JsonDict, passthrough: PassThrough | None = None) -> HostAnswer:
        """A native ``/api/chat`` (not streamed) through ``/v1/chat/completions``; the host's own answer is also
        kept in ``passthrough`` when given."""
        body, dropped = chat_request({**native, "stream": False})
        started = self._clock()
        answer = await self._send("POST", CHAT_PATH, body)
        native_answer = _readable(lambda: chat_answer(answer, str(native.get("model", "")), started, self._clock()))
        if passthrough is not None:
            passthrough.keep_answer(answer)
        return HostAnswer(orjson.dumps(native_answer), tuple(dropped))

    async def generate(self, native: JsonDict) -> HostAnswer:
        """A native ``/api/generate`` (not streamed), as a chat or a raw completion (``generate_request``)."""
        body, dropped = generate_request({**native, "stream": False})
        started = self._clock()
        answer = await self._send("POST", CHAT_PATH if is_chat_body(body) else COMPLETIONS_PATH, body)
        native_answer = _readable(lambda: generate_answer(answer, str(native.get("model", "")), started, self._clock()))
        return HostAnswer(orjson.dumps(native_answer), tuple(dropped))

    async def embed(self, native: JsonDict) -> HostAnswer:
        """A native ``/api/embed`` through ``/v1/embeddings``."""
        body, dropped = embed_request(native)
        started = self._clock()
        answer = await self._send("POST", EMBEDDINGS_PATH, body)
        dimensions = body.get("dimensions")
        model = str(native.get("model", ""))
        native_answer = _readable(lambda: embed_answer(answer, model, started, self._clock(), dimensions))
        return HostAnswer(orjson.dumps(native_answer), tuple(dropped))

    async def models(self) -> list[str]:
        """The ids the host lists at ``/v1/models``."""
        listing = await self._send("GET", "/v1/models")
        data = listing.get("data")
        if not isinstance(data, list):
            return []
        return [str(item["id"]) for item in data if isinstance(item, dict) and item.get("id")]

    # ------------------------------------------------------------ the engine client's interface (backends/client.py)

    async def request(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        *,
        dropped: list[str] | None = None,
        passthrough: PassThrough | None = None,
    ) -> bytes:
        """``EngineClient.request`` for the native paths an OpenAI-compatible host can answer: ``POST /api/chat``,
        ``/api/generate`` (not streamed), ``/api/embed`` and ``GET /api/tags`` (from ``/v1/models``); any other is
        ``not_implemented``. The dropped field names are appended to ``dropped`` when given; a chat's own answer
        is kept in ``passthrough`` when given."""
        calls = {"/api/chat": partial(self.chat, passthrough=passthrough), "/api/generate": self.generate}
        calls["/api/embed"] = self.embed
        if method == "POST" and path in calls:
            answer = await calls[path](body or {})
            if dropped is not None:
                dropped.extend(answer.dropped)
            return answer.body
        if method == "GET" and path == "/api/tags":
            return orjson.dumps({"models": [{"name": name, "model": name} for name in await self.models()]})
        raise FeatureNotImplemented(f"{method} {path} is not available on an OpenAI-compatible host")

    async def request_json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        return _json_object(await self.request(method, path, body))

    async def count_tokens(self, model: str, body: JsonDict) -> int | None:
        """None: OpenAI-compatible hosts have no common tokenizer endpoint (as with a real Ollama)."""
        return None

    @asynccontextmanager
    async def stream(
        self, path: str, body: JsonDict, *, dropped: list[str] | None = None, passthrough: PassThrough | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``EngineClient.stream`` for ``/api/chat`` and ``/api/generate``: yields the native NDJSON lines (a
        chat's own chunks also kept in ``passthrough`` when given)."""
        streams = {
            "/api/chat": partial(self.stream_chat, passthrough=passthrough),
            "/api/generate": self.stream_generate,
        }
        if path not in streams:
            raise FeatureNotImplemented(f"streamed {path} is not available on an OpenAI-compatible host")
        async with streams[path](body) as opened:
            if dropped is not None:
                dropped.extend(opened.dropped)
            yield opened.lines

    # ------------------------------------------------------------ streamed

    @asynccontextmanager
    async def stream_chat(self, native: JsonDict, passthrough: PassThrough | None = None) -> AsyncIterator[HostStream]:
        """A native ``/api/chat`` streamed: errors before the first byte raise here, later ones from the lines.
        Leaving the context closes the connection, which stops generation upstream. With ``passthrough``, each
        chunk as the host sent it is kept there before the native lines it gave are yielded."""
        body, dropped = chat_request({**native, "stream": True})
        converter = ChatStreamToNative(str(native.get("model", "")), self._clock())
        async with self._open(CHAT_PATH, body) as resp:
            yield HostStream(self._lines(resp, converter, passthrough), tuple(dropped))

    @asynccontextmanager
    async def stream_generate(self, native: JsonDict) -> AsyncIterator[HostStream]:
        """A native ``/api/generate`` streamed (as ``stream_chat``)."""
        body, dropped = generate_request({**native, "stream": True})
        converter = GenerateStreamToNative(str(native.get("model", "")), self._clock())
        async with self._open(CHAT_PATH if is_chat_body(body) else COMPLETIONS_PATH, body) as resp:
            yield HostStream(self._lines(resp, converter), tuple(dropped))

    @asynccontextmanager
    async def _open(self, path: str, body: JsonDict) -> AsyncIterator[aiohttp.ClientResponse]:
        data = orjson.dumps(body)

        async def open_response() -> aiohttp.ClientResponse:
            resp = await self._session.post(self.base_url + path, data=data, headers=self._headers)
            if resp.status >= 300:
                payload = await resp.read()
                resp.release()
                raise _upstream_error(resp.status, payload, resp.headers.get("Retry-After"))
            return resp

        resp: aiohttp.ClientResponse = await self._with_retry(open_response)
        try:
            yield resp
        finally:
            resp.close()

    async def _lines(
        self,
        resp: aiohttp.ClientResponse,
        converter: ChatStreamToNative | GenerateStreamToNative,
        passthrough: PassThrough | None = None,
    ) -> AsyncIterator[bytes]:
        try:
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event names
                data = line[len(b"data:") :].strip()
                if data == b"[DONE]":
                    break
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise BackendError("the upstream host sent an unreadable stream event") from exc
                natives = _readable(partial(converter.feed, chunk)) if isinstance(chunk, dict) else []
                if passthrough is not None and isinstance(chunk, dict):
                    passthrough.keep_chunk(chunk)
                for native in natives:
                    yield _line(native)
            else:
                if converter.finish_reason is None:
                    raise BackendUnavailable(
                        "the upstream host ended the stream before its answer was complete", retry_after=_RETRY_AFTER
                    )
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise BackendUnavailable(
                f"the upstream host's connection broke mid-stream: {exc.__class__.__name__}", retry_after=_RETRY_AFTER
            ) from exc
        except TimeoutError as exc:
            raise RequestTimeout("the upstream host stopped sending tokens") from exc
        for native in _readable(lambda: converter.finish(self._clock())):
            yield _line(native)
