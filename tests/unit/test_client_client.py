"""The blocking Python client against a scripted service (``httpx.MockTransport``): what it sends, its retries
(Retry-After honoured through an injected sleep, the budget, connection errors), typed errors, and streams
(never retried after the first chunk, error frames raised, closing closes the connection)."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from shared_ollama_client import (
    BackendUnavailable,
    Client,
    ClientTimeout,
    ConnectionFailed,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    TenantBusy,
)

from tests.unit.client_fakes import Parts, Script, Sleeper, error, lines, ok, streamed

HI = [{"role": "user", "content": "Hi"}]
ANSWER = {"model": "m", "message": {"role": "assistant", "content": "Hello"}, "done": True, "eval_count": 2}


def make(script: Script, sleeper: Sleeper, *, budget: float = 30.0, jitter: float = 0.0, **kwargs: object) -> Client:
    return Client(
        "http://service.test",
        transport=httpx.MockTransport(script),
        sleep=sleeper.sleep,
        clock=sleeper.clock,
        random=lambda: jitter,
        max_retry_seconds=budget,
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_chat_sends_the_native_body_and_the_tenant_headers() -> None:
    script = Script(ok(ANSWER))
    client = make(script, Sleeper(), project="proj", api_key="sk-1", user="alice")
    answer = client.chat("m", HI, options={"num_predict": 4, "temperature": 0}, keep_alive="1m")
    assert answer["message"]["content"] == "Hello"
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/chat")
    assert request.headers["X-Shared-Ollama-Project"] == "proj"
    assert request.headers["X-Shared-Ollama-User"] == "alice"
    assert request.headers["Authorization"] == "Bearer sk-1"
    assert script.bodies()[0] == {
        "model": "m",
        "messages": HI,
        "options": {"num_predict": 4, "temperature": 0},
        "stream": False,
        "keep_alive": "1m",
    }


def test_a_429_is_retried_after_its_retry_after_plus_jitter_then_succeeds() -> None:
    script = Script(error(429, "tenant_busy", header="2", retry_after=1.2), ok(ANSWER))
    sleeper = Sleeper()
    answer = make(script, sleeper, jitter=0.5).chat("m", HI)
    assert answer["done"] is True
    assert sleeper.waits == [2.0 * 1.125], "the header's 2 s, plus the jitter (a quarter at most)"
    assert len(script.requests) == 2
    assert script.bodies()[0] == script.bodies()[1]


def test_without_the_header_the_bodys_retry_after_is_honoured() -> None:
    script = Script(error(503, "queue_full", retry_after=0.75), ok({"models": []}))
    sleeper = Sleeper()
    assert make(script, sleeper).models.list() == []
    assert sleeper.waits == [0.75]


def test_an_exhausted_budget_raises_the_typed_error() -> None:
    busy = error(429, "tenant_busy", header="2", retry_after=2.0)
    script = Script(busy, busy, busy)
    sleeper = Sleeper()
    with pytest.raises(TenantBusy) as refused:
        make(script, sleeper, budget=5.0).chat("m", HI)
    assert sleeper.waits == [2.0, 2.0], "a third wait would have ended past the 5 s budget"
    assert len(script.requests) == 3
    assert (refused.value.status, refused.value.code, refused.value.retry_after) == (429, "tenant_busy", 2.0)
    assert refused.value.request_id == "rid-1"


def test_a_budget_of_zero_never_retries() -> None:
    script = Script(error(503, "backend_unavailable", header="2"))
    sleeper = Sleeper()
    with pytest.raises(BackendUnavailable):
        make(script, sleeper, budget=0).generate("m", "Hi")
    assert sleeper.waits == [] and len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "cls"), [(400, "invalid_request", InvalidRequest), (404, "model_not_found", ModelNotFound)]
)
def test_other_errors_are_not_retried(status: int, code: str, cls: type[Exception]) -> None:
    script = Script(error(status, code))
    sleeper = Sleeper()
    with pytest.raises(cls):
        make(script, sleeper).embeddings("m", ["a", "b"])
    assert sleeper.waits == [] and len(script.requests) == 1


def test_connection_errors_before_any_answer_are_retried_with_backoff() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"), ok({"embeddings": [[0.1]]}))
    sleeper = Sleeper()
    assert make(script, sleeper).embeddings("m", "a")["embeddings"] == [[0.1]]
    assert sleeper.waits == [0.5, 1.0]


def test_a_change_is_not_sent_again_after_its_answer_was_lost() -> None:
    script = Script(httpx.RemoteProtocolError("closed without a response"))
    sleeper = Sleeper()
    with pytest.raises(ConnectionFailed):
        make(script, sleeper).models.delete("old:1b")
    assert sleeper.waits == [] and len(script.requests) == 1
    retried = Script(httpx.ConnectError("refused"), ok({"status": "success"}))
    make(retried, Sleeper()).models.delete("old:1b")  # never reached the service: safe to send again
    assert len(retried.requests) == 2


def test_a_client_timeout_is_not_retried() -> None:
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(ClientTimeout):
        make(script, Sleeper()).chat("m", HI)
    assert len(script.requests) == 1


def test_a_stream_refused_before_its_first_byte_is_retried() -> None:
    chunks = [{"message": {"content": "He"}, "done": False}, {"message": {"content": "llo"}, "done": True}]
    script = Script(error(429, "tenant_busy", header="1"), streamed(Parts([lines(*chunks)])))
    sleeper = Sleeper()
    with make(script, sleeper).chat("m", HI, stream=True) as stream:
        assert [c["message"]["content"] for c in stream] == ["He", "llo"]
    assert sleeper.waits == [1.0] and len(script.requests) == 2
    assert script.bodies()[1]["stream"] is True


def test_an_error_frame_after_the_first_chunk_raises_and_is_not_retried() -> None:
    frame = {"error": "engine restarting", "code": "backend_unavailable", "retry_after": 2.0, "request_id": "r7"}
    body = Parts([lines({"message": {"content": "He"}, "done": False}), lines(frame)])
    script = Script(streamed(body))
    sleeper = Sleeper()
    stream = make(script, sleeper).chat("m", HI, stream=True)
    assert next(stream)["message"]["content"] == "He"
    with pytest.raises(BackendUnavailable) as failed:
        next(stream)
    assert (failed.value.retry_after, failed.value.request_id) == (2.0, "r7")
    assert sleeper.waits == [] and len(script.requests) == 1
    assert stream.closed and body.closed


def test_a_connection_lost_after_the_first_chunk_raises_and_is_not_retried() -> None:
    body = Parts([lines({"response": "He", "done": False})], fail=httpx.ReadError("connection reset"))
    script = Script(streamed(body))
    stream = make(script, Sleeper()).generate("m", "Hi", stream=True)
    assert next(stream)["response"] == "He"
    with pytest.raises(ConnectionFailed):
        next(stream)
    assert len(script.requests) == 1 and body.closed


def test_leaving_a_stream_early_closes_its_connection() -> None:
    body = Parts([lines({"response": str(i), "done": False}) for i in range(50)])
    with make(Script(streamed(body)), Sleeper()).generate("m", "count", stream=True) as stream:
        for chunk in stream:
            assert chunk["response"] == "0"
            break
    assert body.closed and body.sent < 50
    other = Parts([lines({"response": str(i), "done": False}) for i in range(50)])
    opened = make(Script(streamed(other)), Sleeper()).generate("m", "count", stream=True)
    next(opened)
    opened.close()
    assert other.closed


def test_chat_completions_streams_sse_chunks_until_done() -> None:
    events = [{"choices": [{"delta": {"content": piece}}]} for piece in ("He", "llo")]
    sse = b"".join(b"data: " + lines(e).strip() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    script = Script(streamed(Parts([sse]), "text/event-stream"))
    chunks = list(make(script, Sleeper()).chat_completions("m", HI, stream=True, max_tokens=4, temperature=0))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["He", "llo"]
    assert script.requests[0].url.path == "/api/v1/chat/completions"
    assert script.bodies()[0] == {"model": "m", "messages": HI, "stream": True, "temperature": 0, "max_tokens": 4}


def test_health_answers_degraded_without_raising_or_retrying() -> None:
    script = Script(ok({"status": "degraded", "reason": "engine is restarting"}, status=503))
    assert make(script, Sleeper()).health()["status"] == "degraded"
    assert len(script.requests) == 1


def test_a_pull_reports_progress_and_a_failed_pull_raises_its_error() -> None:
    progress = [{"status": "pulling manifest"}, {"status": "downloading", "total": 10, "completed": 5}]
    body = Parts([lines(*progress, {"status": "success"})])
    seen: list[dict[str, object]] = []
    script = Script(streamed(body))
    last = make(script, Sleeper()).models.pull("hf.co/o/r:Q4", progress=lambda p: seen.append(dict(p)))
    assert last == {"status": "success"}
    assert seen == [*progress, {"status": "success"}]
    assert script.bodies()[0] == {"name": "hf.co/o/r:Q4", "stream": True}
    failing = Parts([lines({"status": "pulling manifest"}, {"error": "disk full", "code": "insufficient_storage"})])
    with pytest.raises(Exception) as failed:
        make(Script(streamed(failing)), Sleeper()).models.pull("big")
    assert getattr(failed.value, "code", None) == "insufficient_storage"


def test_vlm_sends_images_as_base64(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"jpeg-bytes")
    script = Script(ok({**ANSWER, "image_compression": []}))
    make(script, Sleeper()).vlm("m", HI, [photo, b"png-bytes"], image_compression={"max_side": 512})
    body = script.bodies()[0]
    assert script.requests[0].url.path == "/api/v1/vlm"
    assert [base64.b64decode(i) for i in body["images"]] == [b"jpeg-bytes", b"png-bytes"]
    assert body["image_compression"] == {"max_side": 512}


def test_batch_chat_and_queue_stats() -> None:
    result = {"results": [{"index": 0, "ok": True, "response": ANSWER}], "total": 1, "succeeded": 1, "failed": 0}
    script = Script(ok(result), ok({"queue_depth": 0}))
    client = make(script, Sleeper())
    assert client.batch_chat([{"model": "m", "messages": HI}], concurrency=2)["succeeded"] == 1
    assert client.queue_stats() == {"queue_depth": 0}
    assert script.bodies()[0] == {"requests": [{"model": "m", "messages": HI}], "concurrency": 2}
    assert [r.url.path for r in script.requests] == ["/api/v1/batch/chat", "/api/v1/queue/stats"]


def test_agents_create_and_a_streamed_run() -> None:
    events = [
        {"type": "step_started", "step": 1},
        {"type": "message_delta", "content": "4"},
        {"type": "done", "output": "4"},
    ]
    script = Script(ok({"name": "calc"}, status=201), streamed(Parts([lines(*events)])))
    client = make(script, Sleeper())
    client.agents.create("calc", "m", tools=["calculator"], max_steps=2)
    with client.agents.run("calc", "2+2?", stream=True) as run:
        assert [e["type"] for e in run] == ["step_started", "message_delta", "done"]
    assert script.bodies() == [
        {"name": "calc", "model": "m", "tools": ["calculator"], "max_steps": 2},
        {"input": "2+2?", "stream": True},
    ]
    assert script.requests[1].url.path == "/api/v1/agents/calc/run"


def test_an_agent_run_refused_with_queue_full_is_retried() -> None:
    script = Script(error(503, "queue_full", header="1"), ok({"output": "4", "run_id": "r1"}))
    sleeper = Sleeper()
    assert make(script, sleeper).agents.run("calc", "2+2?")["output"] == "4"
    assert sleeper.waits == [1.0]


def test_the_typed_error_is_raised_from_a_stream_refused_for_good() -> None:
    script = Script(error(503, "queue_full", header="1"))
    with pytest.raises(QueueFull):
        make(script, Sleeper(), budget=0).chat("m", HI, stream=True)


def test_a_chat_can_send_a_poml_template_and_its_variables_instead_of_messages() -> None:
    script = Script(ok(ANSWER))
    template = "<poml><human-msg>Hi {{ who }}</human-msg></poml>"
    answer = make(script, Sleeper()).chat("m", poml=template, context={"who": "Ada"}, options={"seed": 1})
    assert answer["message"]["content"] == "Hello"
    assert script.bodies()[0] == {
        "model": "m",
        "poml": template,
        "context": {"who": "Ada"},
        "options": {"seed": 1},
        "stream": False,
    }


@pytest.mark.parametrize(
    "arguments",
    [{}, {"messages": HI, "poml": "<poml>x</poml>"}, {"messages": HI, "context": {"a": 1}}],
    ids=["neither", "both", "context-without-poml"],
)
def test_a_chat_takes_exactly_one_of_messages_and_poml(arguments: dict[str, object]) -> None:
    script = Script()
    with pytest.raises(ValueError, match="poml"):
        make(script, Sleeper()).chat("m", **arguments)  # type: ignore[call-overload]
    assert script.requests == []


@pytest.mark.parametrize(
    ("failure", "raised"),
    [(httpx.ReadError("connection reset"), ConnectionFailed), (httpx.ReadTimeout("slow"), ClientTimeout)],
    ids=["read-error", "read-timeout"],
)
def test_a_body_that_fails_mid_way_is_the_clients_error_and_not_sent_again(
    failure: Exception, raised: type[Exception]
) -> None:
    def reply() -> httpx.Response:
        body = Parts([b'{"model": "m", "message": {"role": "assis'], fail=failure)
        return httpx.Response(200, stream=body, headers={"X-Shared-Ollama-Request-Id": "rid-9"})

    script = Script(reply)
    sleeper = Sleeper()
    with pytest.raises(raised) as caught:
        make(script, sleeper).chat("m", HI)
    assert caught.value.request_id == "rid-9"  # type: ignore[attr-defined]
    assert sleeper.waits == [] and len(script.requests) == 1


def test_an_agent_run_is_not_sent_again_after_its_answer_was_lost() -> None:
    script = Script(httpx.RemoteProtocolError("closed without a response"))
    sleeper = Sleeper()
    with pytest.raises(ConnectionFailed):
        make(script, sleeper).agents.run("calc", "2+2?")
    assert sleeper.waits == [] and len(script.requests) == 1
    retried = Script(httpx.ConnectError("refused"), ok({"output": "4", "run_id": "r1"}))
    assert make(retried, Sleeper()).agents.run("calc", "2+2?")["output"] == "4"  # never reached the service
    assert len(retried.requests) == 2
