"""The observability end-to-end tests' helpers: gateway processes in front of the scripted engine, request
bodies and headers, bounded polling, and readers of /metrics and /api/v1/analytics.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import free_port, spawn, stop, wait_http_ok

POLL_TIMEOUT = 30.0
CHAT_MODEL = "smollm2:135m"
CHAT_ROUTE = "/api/v1/chat"
JsonDict = dict[str, Any]
T = TypeVar("T")


def until(check: Callable[[], T], what: str, timeout: float = POLL_TIMEOUT) -> T:
    """Poll ``check`` until it returns something truthy (bounded) and return that: readiness polling."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for: {what}"
        time.sleep(0.05)


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fake_chat(model: str = "fake", content: str = "hi") -> JsonDict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "stream": False,
        "options": {"num_predict": 2},
    }


def sample_sum(text: str, family: str, suffix: str, **labels: str) -> float:
    """The sum of the samples of ``family`` whose name ends with ``suffix`` and whose labels include ``labels``."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != family:
            continue
        for sample in fam.samples:
            if sample.name.endswith(suffix) and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class Gateways:
    """``shared-ollama serve`` processes in front of the scripted engine; all stopped by the fixture."""

    def __init__(self, engine_url: str, log_dir: Path) -> None:
        self.engine_url = engine_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, data_dir: Path, log_name: str, **env: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        full_env = {
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": self.engine_url,
            "SHARED_OLLAMA_DATA_DIR": str(data_dir),
            **env,
        }
        proc = spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=full_env,
            log_path=self.log_dir / f"gateway-observability-{log_name}.log",
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/api/v1/health", proc, timeout=60)
        return url, proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop(proc)


def analytics(client: httpx.Client, headers: dict[str, str] | None = None, **params: str) -> JsonDict:
    resp = client.get("/api/v1/analytics", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def groups_by_key(result: JsonDict) -> dict[str, JsonDict]:
    return {str(group["key"]): group for group in result["groups"]}
