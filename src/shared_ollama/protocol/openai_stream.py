"""An OpenAI chat stream's SSE frames from native chunks, the common chunk written without building dicts. No I/O.

Nearly every chunk of a streamed chat completion is a piece of text: its event differs from the one before only
in ``delta.content``. ``ChatChunkFrames`` keeps the bytes around that text (the id, created, model and the fixed
fields, serialised once) and writes ``prefix + the text as JSON + suffix``. This is hand-written rather than
``orjson.dumps`` of a fresh dict per chunk because that was most of the per-chunk cost of translating a stream
(bench/defaults.py); every other chunk (the first, the last, tool calls, log probabilities, an empty delta) goes
through ``convert.chat_chunk_from_native`` and ``orjson``, and the bytes are the same either way (tested against
that path in tests/unit/test_protocol_openai_stream.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from shared_ollama.protocol.convert import chat_chunk_from_native

JsonDict = dict[str, Any]

_SUFFIX = b'},"finish_reason":null}]}\n\n'


def sse_event(event: JsonDict) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


class ChatChunkFrames:
    """Native chat chunks -> ``chat.completion.chunk`` SSE events (bytes), for one streamed request."""

    def __init__(self, *, request_id: str, created: int, include_usage: bool) -> None:
        self.request_id = request_id
        self.created = created
        self.include_usage = include_usage
        self.first = True
        self._model: str | None = None
        self._prefix = b""

    def __call__(self, native: JsonDict) -> bytes:
        """Every event ``native`` makes, framed and joined (``b""`` when it makes none)."""
        if not self.first and type(native) is dict and not native.get("done") and "logprobs" not in native:
            message = native.get("message")
            if type(message) is dict and "tool_calls" not in message:
                content = message.get("content")
                model = native.get("model", "")
                if type(content) is str and content and type(model) is str:
                    return self._text_prefix(model) + orjson.dumps(content) + _SUFFIX
        events = chat_chunk_from_native(
            native, request_id=self.request_id, created=self.created, first=self.first, include_usage=self.include_usage
        )
        self.first = False
        return b"".join([sse_event(event) for event in events])

    def _text_prefix(self, model: str) -> bytes:
        """Everything of a text chunk's event before the text (made again only when the model name changes)."""
        if model != self._model:
            head = orjson.dumps(
                {
                    "id": f"chatcmpl-{self.request_id}",
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": model,
                    "system_fingerprint": "fp_shared_ollama",
                }
            )
            self._prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":{"content":'
            self._model = model
        return self._prefix
