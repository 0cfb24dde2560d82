"""Observability with real gateway processes: JSON access logs with the request id and without prompts.

The gateway runs against the scripted engine in a process of its own (the ``process_engine`` and ``gateways``
fixtures of ``tests/integration/conftest.py``). Every wait is bounded polling; every process started here is stopped.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.observability import CHAT_ROUTE, Gateways, JsonDict, fake_chat, project, until
from tests.support.processes import stop

pytestmark = pytest.mark.integration  # the scripted engine, not the real one


# --- JSON logs with the request id, without prompts


def test_access_log_is_json_with_the_request_id_and_no_prompt(gateways: Gateways, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url, proc = gateways.start(data_dir, "logs")
    request_id = f"obs-{uuid.uuid4().hex[:12]}"
    marker = f"zebracrossing{uuid.uuid4().hex[:8]}"
    log_file = data_dir / "logs" / "api.log"
    with httpx.Client(base_url=url, timeout=30) as client:
        resp = client.post(
            CHAT_ROUTE,
            json=fake_chat(content=f"Please remember the word {marker}."),
            headers={**project("logger"), "X-Shared-Ollama-Request-Id": request_id},
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Shared-Ollama-Request-Id"] == request_id
        # A failing and a refused request carrying the marker too: errors must not log the prompt either.
        failed = client.post(
            CHAT_ROUTE, json=fake_chat("fault-404", content=marker), headers={"X-Shared-Ollama-Request-Id": "obs-err"}
        )
        assert failed.status_code == 404
        refused = client.post(CHAT_ROUTE, json={**fake_chat(content=marker), "options": {"num_predict": "many"}})
        assert refused.status_code == 400

        def access_lines() -> list[JsonDict]:
            if not log_file.exists():
                return []
            complete = log_file.read_bytes().split(b"\n")[:-1]  # a line still being written is left for later
            entries = [orjson.loads(line) for line in complete if line.strip()]
            return [e for e in entries if e.get("logger") == "shared_ollama.access"]

        def mine() -> JsonDict | None:
            return next((e for e in access_lines() if e.get("request_id") == request_id), None)

        entry = until(mine, f"the access line of {request_id} in {log_file}")
        until(lambda: len(access_lines()) >= 3, "the three access lines")
    assert entry["tenant"] == "logger"
    assert entry["model"] == "fake"
    assert entry["status"] == 200
    assert entry["code"] == "ok"
    assert entry["level"] == "info"
    assert entry["completion_tokens"] == 2
    error_entry = next(e for e in access_lines() if e.get("request_id") == "obs-err")
    assert (error_entry["status"], error_entry["code"], error_entry["model"]) == (404, "model_not_found", "fault-404")

    stop(proc)  # everything flushed, shutdown lines included
    raw = log_file.read_bytes()
    lines = [line for line in raw.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = orjson.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= entry.keys(), entry
    assert marker.encode() not in raw, "prompts are not logged by default"
    stderr_log = gateways.log_dir / "gateway-observability-logs.log"
    assert marker.encode() not in stderr_log.read_bytes(), "nor written to stderr"
