"""``Client``: the blocking client of the Shared Ollama Service (``AsyncClient`` is its asyncio twin)."""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, cast, overload

import httpx

from shared_ollama_client import _calls
from shared_ollama_client._calls import Format, Messages, Options
from shared_ollama_client._retry import RetryBudget
from shared_ollama_client._transport import body_error, parsed, send
from shared_ollama_client._wire import Call, ImageInput, encode_images, headers
from shared_ollama_client.resources import Agents, Models
from shared_ollama_client.streams import Stream
from shared_ollama_client.types import (
    BatchResponse,
    ChatChunk,
    ChatCompletion,
    ChatCompletionChunk,
    ChatResponse,
    EmbeddingsResponse,
    GenerateChunk,
    GenerateResponse,
    Health,
    JsonObject,
    VisionResponse,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 300.0
"""Seconds to wait for each read of an answer (a generation may queue and run for minutes)."""
DEFAULT_MAX_RETRY_SECONDS = 60.0


class Client:
    """A blocking client of the service API (``/api/v1``).

    ``project`` names the caller's tenant (``X-Shared-Ollama-Project``), ``api_key`` authenticates it
    (``Authorization: Bearer``) when the service has keys, ``user`` names an end user inside the tenant
    (``X-Shared-Ollama-User``, fairness and per-user caps). Refusals that say when to come back (429, 503) and
    connection errors before any answer are retried for at most ``max_retry_seconds`` in all (0: never).
    ``sleep``, ``random`` and ``clock`` replace ``time.sleep``, ``random.random`` and ``time.monotonic`` (tests);
    ``transport`` replaces httpx's (tests, proxies).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        project: str | None = None,
        api_key: str | None = None,
        user: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] = time.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retry_seconds = max_retry_seconds
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers(project, api_key, user), timeout=timeout, transport=transport
        )
        self.models = Models(self._json, self._stream)
        """Model management: ``list``, ``ps``, ``show``, ``create``, ``copy``, ``delete``, ``pull``."""
        self.agents = Agents(self._json, self._stream)
        """Agents: ``list``, ``create``, ``get``, ``delete``, ``run``."""

    # ---------------------------------------------------------------- plumbing

    def _open(self, call: Call) -> httpx.Response:
        budget = RetryBudget(self.max_retry_seconds, self._clock, self._random)
        return send(self._http, call, budget, self._sleep)

    def _json(self, call: Call) -> Any:
        response = self._open(call)
        try:
            response.read()
        except httpx.TransportError as exc:
            raise body_error(exc, response, self._http.base_url) from exc
        finally:
            response.close()
        return parsed(response)

    def _stream(self, call: Call) -> Stream[Any]:
        return Stream(self._open(call), call)

    def _answer(self, call: Call) -> Any:
        return self._stream(call) if call.stream else self._json(call)

    def close(self) -> None:
        """Close the connections (open streams included)."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- generation

    @overload
    def chat(
        self,
        model: str,
        messages: Messages | None = ...,
        *,
        poml: str | None = ...,
        context: Mapping[str, Any] | None = ...,
        options: Options | None = ...,
        stream: Literal[False] = ...,
        format: Format | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        keep_alive: str | float | None = ...,
        think: bool | str | None = ...,
        cache: str | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> ChatResponse: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Messages | None = ...,
        *,
        poml: str | None = ...,
        context: Mapping[str, Any] | None = ...,
        options: Options | None = ...,
        stream: Literal[True],
        format: Format | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        keep_alive: str | float | None = ...,
        think: bool | str | None = ...,
        cache: str | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> Stream[ChatChunk]: ...
    def chat(
        self,
        model: str,
        messages: Messages | None = None,
        *,
        poml: str | None = None,
        context: Mapping[str, Any] | None = None,
        options: Options | None = None,
        stream: bool = False,
        format: Format | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        keep_alive: str | float | None = None,
        think: bool | str | None = None,
        cache: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResponse | Stream[ChatChunk]:
        """A chat answer (``/api/v1/chat``), or with ``stream=True`` its chunks as they are generated.

        Either ``messages``, or ``poml``: a POML template the service renders to messages with the variables of
        ``context`` (docs/POML_GUIDE.md); ``ValueError`` for both or neither."""
        call = _calls.chat(
            model, messages, poml=poml, context=context, options=options, stream=stream, format=format, tools=tools,
            keep_alive=keep_alive, think=think, cache=cache, extra=extra,
        )  # fmt: skip
        return cast("ChatResponse | Stream[ChatChunk]", self._answer(call))

    @overload
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = ...,
        options: Options | None = ...,
        stream: Literal[False] = ...,
        format: Format | None = ...,
        keep_alive: str | float | None = ...,
        think: bool | str | None = ...,
        raw: bool | None = ...,
        suffix: str | None = ...,
        images: Iterable[ImageInput] | None = ...,
        cache: str | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> GenerateResponse: ...
    @overload
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = ...,
        options: Options | None = ...,
        stream: Literal[True],
        format: Format | None = ...,
        keep_alive: str | float | None = ...,
        think: bool | str | None = ...,
        raw: bool | None = ...,
        suffix: str | None = ...,
        images: Iterable[ImageInput] | None = ...,
        cache: str | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> Stream[GenerateChunk]: ...
    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        options: Options | None = None,
        stream: bool = False,
        format: Format | None = None,
        keep_alive: str | float | None = None,
        think: bool | str | None = None,
        raw: bool | None = None,
        suffix: str | None = None,
        images: Iterable[ImageInput] | None = None,
        cache: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> GenerateResponse | Stream[GenerateChunk]:
        """A completion of ``prompt`` (``/api/v1/generate``), or with ``stream=True`` its chunks."""
        call = _calls.generate(
            model, prompt, system=system, options=options, stream=stream, format=format, keep_alive=keep_alive,
            think=think, raw=raw, suffix=suffix, images=encode_images(images) if images is not None else None,
            cache=cache, extra=extra,
        )  # fmt: skip
        return cast("GenerateResponse | Stream[GenerateChunk]", self._answer(call))

    @overload
    def chat_completions(
        self,
        model: str,
        messages: Messages,
        *,
        stream: Literal[False] = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        response_format: Mapping[str, Any] | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> ChatCompletion: ...
    @overload
    def chat_completions(
        self,
        model: str,
        messages: Messages,
        *,
        stream: Literal[True],
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stop: str | Sequence[str] | None = ...,
        seed: int | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        response_format: Mapping[str, Any] | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> Stream[ChatCompletionChunk]: ...
    def chat_completions(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """An OpenAI-shaped chat completion (``/api/v1/chat/completions``), or with ``stream=True`` its chunks."""
        call = _calls.chat_completions(
            model, messages, stream=stream, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop,
            seed=seed, tools=tools, tool_choice=tool_choice, response_format=response_format, extra=extra,
        )  # fmt: skip
        return cast("ChatCompletion | Stream[ChatCompletionChunk]", self._answer(call))

    @overload
    def vlm(
        self,
        model: str,
        messages: Messages,
        images: Iterable[ImageInput],
        *,
        image_compression: Mapping[str, Any] | None = ...,
        options: Options | None = ...,
        stream: Literal[False] = ...,
        format: Format | None = ...,
        keep_alive: str | float | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> VisionResponse: ...
    @overload
    def vlm(
        self,
        model: str,
        messages: Messages,
        images: Iterable[ImageInput],
        *,
        image_compression: Mapping[str, Any] | None = ...,
        options: Options | None = ...,
        stream: Literal[True],
        format: Format | None = ...,
        keep_alive: str | float | None = ...,
        extra: Mapping[str, Any] | None = ...,
    ) -> Stream[ChatChunk]: ...
    def vlm(
        self,
        model: str,
        messages: Messages,
        images: Iterable[ImageInput],
        *,
        image_compression: Mapping[str, Any] | None = None,
        options: Options | None = None,
        stream: bool = False,
        format: Format | None = None,
        keep_alive: str | float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> VisionResponse | Stream[ChatChunk]:
        """A vision chat (``/api/v1/vlm``): ``images`` (paths or bytes, sent as base64) join the last user
        message; ``image_compression`` (``enabled``, ``max_side``, ``jpeg_quality``) overrides the service's."""
        call = _calls.vlm(
            model, messages, encode_images(images), image_compression=image_compression, options=options,
            stream=stream, format=format, keep_alive=keep_alive, extra=extra,
        )  # fmt: skip
        return cast("VisionResponse | Stream[ChatChunk]", self._answer(call))

    def embeddings(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool | None = None,
        keep_alive: str | float | None = None,
    ) -> EmbeddingsResponse:
        """Embedding vectors (``/api/v1/embeddings``): one per text of ``input``."""
        call = _calls.embeddings(model, input, truncate=truncate, keep_alive=keep_alive)
        return cast(EmbeddingsResponse, self._json(call))

    def batch_chat(self, requests: Sequence[Mapping[str, Any]], *, concurrency: int | None = None) -> BatchResponse:
        """Many chat requests (each a ``chat`` body: ``model``, ``messages``, ``options``...) in one call
        (``/api/v1/batch/chat``, batch priority): one result per request, in order, each ``ok`` or its error."""
        return cast(BatchResponse, self._json(_calls.batch_chat(requests, concurrency=concurrency)))

    # ---------------------------------------------------------------- operations

    def health(self) -> Health:
        """The service's and the engine's health (``status`` ``healthy`` or ``degraded``); never retried."""
        return cast(Health, self._json(_calls.health()))

    def queue_stats(self) -> JsonObject:
        """The queue's state: depth, slots, the caller's tenant in flight and waiting, rejections."""
        return cast(JsonObject, self._json(_calls.queue_stats()))
