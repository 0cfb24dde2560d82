"""Engine selection and supervision: restart after a crash, a stand-in `ollama` binary, reuse of a running engine."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "Capital of France?"}]


def _wait_state(client: httpx.Client, predicate: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/api/v1/health").json()
        if body["engine"]["state"] == predicate:
            return body
        time.sleep(0.05)  # bounded polling of the health endpoint
    raise AssertionError(f"engine never reached state {predicate!r}")


@pytest.fixture
def own_gateway(model_store: Path, tmp_path: Path, artifacts_dir: Path) -> Iterator[httpx.Client]:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-supervision.log",
        env={"SHARED_OLLAMA_ENGINE_RESTART_BACKOFF": "3"},
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        stop(proc)


def test_engine_killed_gives_503_then_recovers(own_gateway: httpx.Client) -> None:
    before = own_gateway.get("/api/v1/health").json()["engine"]
    os.kill(int(before["pid"]), signal.SIGKILL)
    degraded = _wait_state(own_gateway, "restarting")
    assert degraded["status"] == "degraded"
    assert own_gateway.get("/api/v1/health").status_code == 503

    resp = own_gateway.post("/api/v1/chat", json={"messages": QUESTION})
    assert resp.status_code == 503
    assert resp.json()["code"] == "backend_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    oai = own_gateway.post("/v1/chat/completions", json={"model": "smollm2:135m", "messages": QUESTION})
    assert oai.status_code == 503
    assert oai.json()["error"]["code"] == "backend_unavailable"

    after = _wait_state(own_gateway, "running")["engine"]
    assert after["restarts"] == 1
    assert after["pid"] != before["pid"]
    resp = own_gateway.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 4}})
    assert resp.status_code == 200


def test_standin_ollama_binary_is_started_and_stopped(model_store: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = bin_dir / "ollama"
    standin.write_text(
        "#!/bin/sh\n"
        "# Stand-in for `ollama serve`: runs the embedded engine on $OLLAMA_HOST.\n"
        '[ "$1" = serve ] || exit 2\n'
        f'exec "{sys.executable}" -m shared_ollama.cli engine '
        '--host "${OLLAMA_HOST%:*}" --port "${OLLAMA_HOST##*:}"\n'
    )
    standin.chmod(standin.stat().st_mode | stat.S_IEXEC)
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-standin.log",
        env={
            "SHARED_OLLAMA_ENGINE": "auto",
            "SHARED_OLLAMA_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            engine = client.get("/api/v1/health").json()["engine"]
            assert engine["kind"] == "ollama"
            assert engine["managed"] is True
            engine_pid = int(engine["pid"])
            resp = client.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 4}})
            assert resp.status_code == 200
    finally:
        stop(proc)
    with pytest.raises(ProcessLookupError):
        os.kill(engine_pid, 0)


def test_running_engine_is_reused_not_started_twice(
    model_store: Path, engine_url: str, tmp_path: Path, artifacts_dir: Path
) -> None:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-reuse.log",
        env={"SHARED_OLLAMA_ENGINE": "auto", "SHARED_OLLAMA_OLLAMA_URL": engine_url},
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            engine = client.get("/api/v1/health").json()["engine"]
            assert engine["kind"] == "external"
            assert engine["url"] == engine_url
            assert engine["pid"] is None
            assert client.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 2}}).is_success
    finally:
        stop(proc)


def test_stalled_engine_gives_degraded_health_and_fast_503_then_recovers(
    model_store: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    """A managed engine stopped with SIGSTOP: alive, listening, silent. Requests must not wait for it until their
    deadline (120 s here; the client's timeout is the guard), and health must say why it is degraded."""
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-stalled-engine.log",
        env={
            "SHARED_OLLAMA_ENGINE_HEALTH_INTERVAL": "0.3",
            "SHARED_OLLAMA_ENGINE_PROBE_TIMEOUT": "1",
            "SHARED_OLLAMA_ENGINE_PROBE_FAILURES": "2",
            "SHARED_OLLAMA_QUEUE_TIMEOUT_TEXT": "120",
        },
    )
    engine_pid: int | None = None
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            engine_pid = int(client.get("/api/v1/health").json()["engine"]["pid"])
            os.kill(engine_pid, signal.SIGSTOP)
            stalled = _wait_state(client, "stalled")
            assert stalled["status"] == "degraded"
            assert (
                stalled["reason"]
                == "engine does not answer within 1 s (2 health probes in a row); its process is alive"
            )
            assert client.get("/api/v1/health").status_code == 503

            resp = client.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 4}})
            assert resp.status_code == 503, resp.text
            assert resp.json()["code"] == "backend_unavailable"
            assert int(resp.headers["Retry-After"]) >= 1

            os.kill(engine_pid, signal.SIGCONT)
            running = _wait_state(client, "running")
            assert running["status"] == "healthy" and "reason" not in running
            assert running["engine"]["pid"] == engine_pid and running["engine"]["restarts"] == 0
            resp = client.post("/api/v1/chat", json={"messages": QUESTION, "options": {"num_predict": 4}})
            assert resp.status_code == 200, resp.text
    finally:
        if engine_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(engine_pid, signal.SIGCONT)
        stop(proc)
