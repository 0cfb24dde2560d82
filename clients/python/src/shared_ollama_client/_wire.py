"""What both clients share on the wire (pure, no I/O but reading image files): headers, ``Retry-After``, the
error of a failed response, and the decoding of NDJSON and SSE streams with their error frames."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from shared_ollama_client.errors import ConnectionFailed, InvalidResponse, SharedOllamaError, error_from_body

JsonObject = dict[str, Any]
ImageInput = str | os.PathLike[str] | bytes
"""An image for ``vlm``: a file's path, or the image's bytes."""

PROJECT_HEADER = "X-Shared-Ollama-Project"
USER_HEADER = "X-Shared-Ollama-User"
REQUEST_ID_HEADER = "X-Shared-Ollama-Request-Id"
RETRY_STATUSES = frozenset({429, 503})
"""Refusals that say when to come back, and are retried within the budget."""


@dataclass(frozen=True)
class Call:
    """One request to the service, as both clients send it."""

    method: str
    path: str
    body: JsonObject | None = None
    stream: bool = False
    """The answer is a stream (NDJSON, or SSE when ``sse``) read chunk by chunk."""
    sse: bool = False
    complete: Callable[[JsonObject], bool] | None = None
    """For a stream: whether a chunk is its last (a stream that ends before such a chunk was cut off)."""
    resend: bool = True
    """Whether the request may be sent again after a connection broke before any answer (generation: yes;
    changes such as deleting a model: only when the connection could not be made at all)."""
    retry: bool = True
    """Whether 429/503 refusals are retried at all."""
    accept: frozenset[int] = field(default_factory=frozenset)
    """Statuses besides 2xx whose body is the answer (health's 503 when degraded)."""


def headers(project: str | None, api_key: str | None, user: str | None) -> dict[str, str]:
    out = {"Accept": "application/json"}
    if project:
        out[PROJECT_HEADER] = project
    if user:
        out[USER_HEADER] = user
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    return out


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds: a number of seconds, or an HTTP date (``None`` when absent or unreadable)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable


def error_of(response: httpx.Response) -> SharedOllamaError:
    """The typed error of a failed response whose body has been read."""
    try:
        body: object = response.json()
    except ValueError:
        body = {"error": response.text.strip()[:500] or None}
    return error_from_body(
        response.status_code,
        body,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        request_id=response.headers.get(REQUEST_ID_HEADER),
    )


def frame_error(item: Mapping[str, Any], request_id: str | None) -> SharedOllamaError | None:
    """The error an error frame of a stream carries (``None`` for an ordinary chunk).

    Native frames are ``{"error": "<message>", "code", ...}`` (agent runs add ``"type": "error"``); OpenAI-format
    frames are ``{"error": {"message", "code", ...}}``. An agent's ``done`` event may report an ``error`` of its
    run: that is the run's result, not a failure of the stream.
    """
    if "error" not in item or item.get("type", "error") != "error":
        return None
    return error_from_body(None, item, request_id=request_id)


class Decoder:
    """Lines of a streamed answer in, chunks out; error frames raised as typed errors.

    ``ended`` turns true at SSE's ``[DONE]`` or at the chunk ``Call.complete`` recognises as the last (nothing
    more is read after it); ``finish`` raises ``ConnectionFailed`` for a stream that ended before either.
    """

    def __init__(self, call: Call, request_id: str | None) -> None:
        self._sse = call.sse
        self._complete = call.complete
        self._checked = call.sse or call.complete is not None
        self.request_id = request_id
        self.ended = False
        self._data: list[str] = []

    def feed(self, line: str) -> JsonObject | None:
        """The chunk ``line`` completes, if any."""
        if not self._sse:
            return self._item(line) if line.strip() else None
        if line.startswith(":"):
            return None  # an SSE comment (keep-alive)
        if line.strip():
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
            return None
        return self._event()

    def finish(self) -> JsonObject | None:
        """The stream ended: its last chunk if one was still pending; ``ConnectionFailed`` if it was cut off."""
        item = self._event() if self._sse and self._data else None
        if self._checked and not self.ended:
            raise ConnectionFailed(
                "the stream ended before it was complete (the connection was cut)", request_id=self.request_id
            )
        return item

    def _event(self) -> JsonObject | None:
        data, self._data = "\n".join(self._data), []
        if not data:
            return None
        if data.strip() == "[DONE]":
            self.ended = True
            return None
        return self._item(data)

    def _item(self, text: str) -> JsonObject:
        try:
            item = json.loads(text)
        except ValueError:
            raise InvalidResponse(
                f"the service sent a stream chunk that is not JSON: {text[:200]!r}", request_id=self.request_id
            ) from None
        if not isinstance(item, dict):
            raise InvalidResponse(
                "the service sent a stream chunk that is not a JSON object", request_id=self.request_id
            )
        error = frame_error(item, self.request_id)
        if error is not None:
            raise error
        if self._complete is not None and self._complete(item):
            self.ended = True
        return item


def encode_images(images: Iterable[ImageInput]) -> list[str]:
    """Images as base64 for the wire: ``bytes`` as they are, anything else read from the file it names."""
    encoded = []
    for image in images:
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        else:
            with open(os.fspath(image), "rb") as handle:
                data = handle.read()
        encoded.append(base64.b64encode(data).decode("ascii"))
    return encoded
