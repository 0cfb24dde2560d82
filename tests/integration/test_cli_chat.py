"""``shared-ollama chat`` and ``models ls|ps`` against a served gateway (scripted engine): the answer streamed, the
system prompt and options sent, refusals and mid-stream errors as exit code 1, Ctrl-C (a real SIGINT) ending the
answer with the service's place freed, and the service found through SHARED_OLLAMA_URL or SHARED_OLLAMA_PORT."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from shared_ollama.cli import main
from tests.integration.conftest import Engine, ServedGateway
from tests.support.processes import poll

Start = Callable[..., ServedGateway]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_chat(engine: Engine) -> dict[str, object]:
    received = httpx.get(f"{engine.url}/_fake/requests").json()["requests"]
    return next(r["body"] for r in reversed(received) if r["path"] == "/api/chat")


def test_a_one_shot_prompt_is_streamed_with_the_system_prompt_and_options(
    serve_gateway: Start, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = serve_gateway()
    code, out, err = run(
        capsys, "chat", "fake", "Why", "is the sky blue?", "--system", "Be brief.", "--option", "num_predict=3",
        "--option", "seed=7", "--url", gw.url,
    )  # fmt: skip
    assert (code, out, err) == (0, "tok tok tok \n", "")
    body = last_chat(engine)
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    options = body["options"]
    assert isinstance(options, dict) and options["num_predict"] == 3 and options["seed"] == 7


def test_refusals_and_mid_stream_errors_exit_1_with_the_services_message(
    serve_gateway: Start, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = serve_gateway()
    code, out, err = run(capsys, "--url", gw.url, "chat", "missing-model", "hi")
    assert (code, out) == (1, "") and err.startswith("error: 404: ") and "missing-model" in err
    code, out, err = run(capsys, "chat", "--url", gw.url, "error-midstream", "hi")
    assert code == 1 and out == "tok tok \n"
    assert err == "error: scripted mid-stream failure\n"


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, limit: float = 30.0) -> bytes:
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + limit
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while needle not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {needle!r} on the CLI's output in {limit} s: {seen!r}"
            if selector.select(timeout=left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"the CLI closed its output: {seen!r}"
                seen += chunk
    return seen


def test_ctrl_c_ends_the_answer_and_frees_the_place_at_once(serve_gateway: Start, engine: Engine) -> None:
    gw = serve_gateway()
    env = {**os.environ, "SHARED_OLLAMA_URL": gw.url}  # found through the environment, as the service was configured
    long_answer = ["--option", "fake_tokens=100000", "--option", "fake_token_ms=5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared_ollama.cli", "chat", "fake", "hi", *long_answer],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _read_until(proc, b"tok tok ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert err.decode().endswith("(stopped)\n") and b"Traceback" not in err

    def freed() -> bool:
        stats = httpx.get(f"{gw.url}/api/v1/queue/stats").json()
        return stats["engine_slots"]["in_use"] == 0 and engine.engine.in_flight == 0

    poll(freed, "the gateway's slot and the engine's generation freed", limit=10)


def test_models_ls_and_ps_print_tables_or_json_from_the_configured_port(
    serve_gateway: Start, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = serve_gateway()
    monkeypatch.setenv("SHARED_OLLAMA_PORT", str(gw.port))  # no --url: the port the service was started on
    code, out, _ = run(capsys, "models", "ls")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert row.split() == ["fake:latest", "-", "1", "B", "-"]
    code, out, _ = run(capsys, "models", "ls", "--json")
    assert code == 0 and json.loads(out)["models"][0]["name"] == "fake:latest"
    code, out, _ = run(capsys, "models", "ps")
    assert code == 0 and out.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    monkeypatch.setenv("SHARED_OLLAMA_PORT", "1")
    monkeypatch.setenv("SHARED_OLLAMA_URL", gw.url)  # the URL wins over host and port
    code, out, _ = run(capsys, "models", "ps", "--json")
    assert code == 0 and json.loads(out) == {"models": []}
