"""A scripted Ollama-API engine for fault injection and timing (tests and bench/), never proof of features.

Raw ASGI on uvicorn, so it stays much faster than anything it is used to measure. Behaviour is chosen per
request by the model name:

- ``fault-500`` / ``fault-503`` / ``fault-404``: answer with that status and an Ollama error body;
- a name starting with ``missing-``: ``404 {"error": "model '<name>' not found"}``, as Ollama answers an unknown model;
- ``crash-midstream``: stream a few chunks, then drop the connection without a final chunk;
- ``error-midstream``: stream a few chunks, then one ``{"error": ...}`` line, as Ollama does;
- a name containing ``vision``: ``/api/show`` lists the ``vision`` capability (others only ``completion``);
- ``/api/pull``: progress lines then ``success``; ``pull-error`` ends with an ``{"error": ...}`` line instead, and
  ``pull-hold`` holds after its first line until the gateway hangs up (counted in ``pulls_held`` and
  ``pulls_abandoned`` of ``GET /_fake/requests``);
- anything else: a normal answer of ``--tokens`` tokens, after ``--latency-ms``, ``--token-ms`` apart
  (``options.fake_tokens`` and ``options.fake_token_ms`` override the count and pacing per request; as with a
  real model, ``options.num_predict`` caps the answer's length, a negative one does not).

``HEAD /api/blobs/<digest>`` answers 404; ``POST`` reads the body as it comes and answers 201, recording its size in
``blobs`` of ``GET /_fake/requests`` (an upload cut off by the gateway is counted in ``blobs_cut``).

Unknown paths (``/api/tokenize`` among them, as in real Ollama) answer 404 with the text ``404 page not found``.
``GET /_fake/requests`` returns the bodies received (most recent last, bounded); ``DELETE`` clears them.

Gates, for tests that must hold requests at the engine: a request with ``options.fake_gate = "<name>"`` waits
(before answering anything) until ``POST /_fake/open {"gate": "<name>"}``; an opened gate stays open.
``GET /_fake/requests`` also reports how many requests wait at each gate. A streamed request with
``options.fake_hold_end = "<name>"`` sends its final line, then holds its response open until that gate opens
(as an engine still finishing its bookkeeping after the answer's last line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_CREATED = "2026-01-01T00:00:00.000000000Z"


@dataclass
class FakeEngineConfig:
    latency_ms: float = 0.0
    token_ms: float = 0.0
    tokens: int = 8
    dims: int = 8


@dataclass
class FakeEngine:
    config: FakeEngineConfig = field(default_factory=FakeEngineConfig)
    received: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=1000))
    in_flight: int = 0
    cancelled: int = 0
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    pulls_held: int = 0
    pulls_abandoned: int = 0
    blobs: list[int] = field(default_factory=list)
    blobs_cut: int = 0

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/api/blobs/"):
            await self._blob(method, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if method == "GET":
            await self._get(path, send)
            return
        if method == "DELETE" and path == "/_fake/requests":
            self.received.clear()
            await _json(send, 200, {})
            return
        try:
            req = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            await _json(send, 400, {"error": "invalid JSON"})
            return
        if path == "/_fake/open":
            self.gate(str(req.get("gate"))).set()
            await _json(send, 200, {})
            return
        self.received.append({"path": path, "body": req, "at": time.monotonic()})
        options = req.get("options") if isinstance(req.get("options"), dict) else {}
        gate = options.get("fake_gate") if options else None
        if isinstance(gate, str):
            self.waiting[gate] = self.waiting.get(gate, 0) + 1
            try:
                await self.gate(gate).wait()
            finally:
                self.waiting[gate] -= 1
        model = str(req.get("model", ""))
        if model.startswith("fault-"):
            status = int(model.split("-", 1)[1])
            await _json(send, status, {"error": f"scripted failure {status}"})
            return
        if model.startswith("missing-"):
            await _json(send, 404, {"error": f"model '{model}' not found"})
            return
        if path in ("/api/embed", "/api/embeddings"):
            await self._embed(path, req, send)
        elif path in ("/api/chat", "/api/generate"):
            self.in_flight += 1
            try:
                await self._generate(path, req, receive, send)
            finally:
                self.in_flight -= 1
        elif path == "/api/pull":
            await self._pull(model, receive, send)
        elif path in ("/api/copy", "/api/delete"):
            await _json(send, 200, {})
        elif path == "/api/show":
            capabilities = ["completion", "vision"] if "vision" in model else ["completion"]
            await _json(send, 200, {"modelfile": "", "details": {"family": "fake"}, "capabilities": capabilities})
        else:
            await _not_found(send)

    async def _get(self, path: str, send: Send) -> None:
        if path == "/api/version":
            await _json(send, 200, {"version": "0.0.0-fake"})
        elif path == "/api/tags":
            await _json(send, 200, {"models": [{"name": "fake:latest", "model": "fake:latest", "size": 1}]})
        elif path == "/api/ps":
            await _json(send, 200, {"models": []})
        elif path == "/_fake/requests":
            body = {
                "requests": list(self.received),
                "in_flight": self.in_flight,
                "waiting": self.waiting,
                "pulls_held": self.pulls_held,
                "pulls_abandoned": self.pulls_abandoned,
                "blobs": self.blobs,
                "blobs_cut": self.blobs_cut,
            }
            await _json(send, 200, body)
        elif path == "/":
            await _json(send, 200, {"status": "fake"})
        else:
            await _not_found(send)

    async def _blob(self, method: str, receive: Receive, send: Send) -> None:
        size, more = 0, method == "POST"
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.blobs_cut += 1
                return
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if method == "POST":
            self.blobs.append(size)
        await send({"type": "http.response.start", "status": 201 if method == "POST" else 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _embed(self, path: str, req: dict[str, Any], send: Send) -> None:
        vector = [1.0] + [0.0] * (self.config.dims - 1)
        if path == "/api/embeddings":
            await _json(send, 200, {"embedding": vector})
            return
        texts = req.get("input", "")
        count = 1 if isinstance(texts, str) else len(texts)
        await _json(send, 200, {"model": req.get("model"), "embeddings": [vector] * count, "prompt_eval_count": count})

    async def _pull(self, model: str, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]}
        )
        await send({"type": "http.response.body", "body": b'{"status":"pulling manifest"}\n', "more_body": True})
        if model == "pull-error":
            failure = b'{"error":"pull model manifest: file does not exist"}\n'
            await send({"type": "http.response.body", "body": failure})
            return
        if model == "pull-hold":
            self.pulls_held += 1
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.pulls_abandoned += 1
            finally:
                self.pulls_held -= 1
            return
        await send({"type": "http.response.body", "body": b'{"status":"success"}\n'})

    def _chunk(self, path: str, model: str, text: str) -> dict[str, Any]:
        if path == "/api/chat":
            return {
                "model": model,
                "created_at": _CREATED,
                "message": {"role": "assistant", "content": text},
                "done": False,
            }
        return {"model": model, "created_at": _CREATED, "response": text, "done": False}

    def _final(self, path: str, model: str, text: str, started: float, tokens: int) -> dict[str, Any]:
        out = self._chunk(path, model, text)
        elapsed = int((time.perf_counter() - started) * 1e9)
        out.update(
            done=True,
            done_reason="stop",
            total_duration=elapsed,
            load_duration=0,
            prompt_eval_count=3,
            prompt_eval_duration=1000,
            eval_count=tokens,
            eval_duration=max(elapsed, 1),
        )
        return out

    async def _generate(self, path: str, req: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        model = str(req.get("model", ""))
        options = req.get("options") or {}
        cfg = FakeEngineConfig(
            latency_ms=self.config.latency_ms,
            token_ms=float(options.get("fake_token_ms", self.config.token_ms)),
            tokens=_answer_length(options, self.config.tokens),
        )
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000)
        if req.get("stream") is False:
            if cfg.token_ms:
                await asyncio.sleep(cfg.token_ms * cfg.tokens / 1000)
            await _json(send, 200, self._final(path, model, "tok " * cfg.tokens, started, cfg.tokens))
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-ndjson")]}
        )
        for i in range(cfg.tokens):
            if model in ("crash-midstream", "error-midstream") and i == 2:
                if model == "error-midstream":
                    await send({"type": "http.response.body", "body": b'{"error":"scripted mid-stream failure"}\n'})
                    return
                raise RuntimeError("scripted crash mid-stream")
            if cfg.token_ms:
                await asyncio.sleep(cfg.token_ms / 1000)
            line = orjson.dumps(self._chunk(path, model, "tok ")) + b"\n"
            try:
                await send({"type": "http.response.body", "body": line, "more_body": True})
            except OSError:
                self.cancelled += 1
                return
        final = orjson.dumps(self._final(path, model, "", started, cfg.tokens)) + b"\n"
        hold = options.get("fake_hold_end")
        if not isinstance(hold, str):
            await send({"type": "http.response.body", "body": final})
            return
        await send({"type": "http.response.body", "body": final, "more_body": True})
        self.waiting[hold] = self.waiting.get(hold, 0) + 1
        try:
            await self.gate(hold).wait()
        finally:
            self.waiting[hold] -= 1
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b""})


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _not_found(send: Send) -> None:
    """An unknown path, answered as Ollama's router does: plain text, not JSON."""
    payload = b"404 page not found"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _answer_length(options: dict[str, Any], natural: int) -> int:
    """The scripted model's answer is ``fake_tokens`` (else ``--tokens``) long, cut at ``num_predict``."""
    length = int(options.get("fake_tokens", natural))
    limit = int(options.get("num_predict", length))
    return length if limit < 0 else min(limit, length)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="scripted Ollama-API engine")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--token-ms", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    engine = FakeEngine(FakeEngineConfig(args.latency_ms, args.token_ms, args.tokens))
    uvicorn.run(
        engine, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


if __name__ == "__main__":
    main()
