"""Every example in ``examples/`` run as its user would run it (bash + curl, Python, ``npx tsx``, ``go run``)
against the real gateway, its output checked, and its requests found under the tenant it named.

A missing toolchain skips its examples with the reason, except in CI (``CI`` is ``true`` or ``1``, any case), where it
fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.ci import in_ci
from tests.support.processes import poll

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHAT_MODEL = "smollm2:135m"
EMBED_DIMENSIONS = 384  # all-minilm
NUM_PREDICT = 16  # what every example asks
RUN_TIMEOUT = 180.0  # seconds for one example (the Go one compiles first)

Json = dict[str, object]


def toolchain(command: str, how: str) -> str:
    """The path of ``command``; skipped when it is missing, except in CI, where the examples must run."""
    found = shutil.which(command)
    if found is None:
        reason = f"{command} is not installed ({how})"
        if in_ci(os.environ):
            pytest.fail(f"CI must run every example: {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def requirement(present: bool, reason: str) -> None:
    if not present:
        if in_ci(os.environ):
            pytest.fail(f"CI must run every example: {reason}", pytrace=False)
        pytest.skip(reason)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        args, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{args} exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ---------------------------------------------------------------- what the examples print


def field(out: str, name: str) -> str:
    """The text after ``name: `` on its line of ``out``."""
    found = re.search(rf"^{name}: (.*)$", out, re.MULTILINE)
    assert found is not None, f"no '{name}:' line in:\n{out}"
    return found.group(1)


def check_lines(out: str, *, embeddings: bool) -> None:
    """The SDK examples' summary: a reply, its token count, a streamed reply in several chunks (and vectors)."""
    assert field(out, "reply").strip(), out
    assert 0 < int(field(out, "tokens")) <= NUM_PREDICT, out
    assert field(out, "stream").strip(), out
    assert int(field(out, "chunks")) >= NUM_PREDICT // 2, f"not streamed token by token:\n{out}"
    if embeddings:
        assert field(out, "embeddings") == f"2 x {EMBED_DIMENSIONS}", out


def check_curl_chat(out: str) -> None:
    answer = json.loads(out)
    assert answer["model"] == CHAT_MODEL and answer["done"] is True, answer
    assert answer["message"]["role"] == "assistant" and answer["message"]["content"].strip(), answer
    assert 0 < answer["eval_count"] <= NUM_PREDICT, answer


def check_curl_stream(out: str) -> None:
    chunks = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(chunks) >= 2, out
    assert all(not c["done"] for c in chunks[:-1]) and chunks[-1]["done"] is True, out
    assert "".join(c["message"]["content"] for c in chunks).strip(), out
    assert 0 < chunks[-1]["eval_count"] <= NUM_PREDICT, out


def check_curl_openai(out: str) -> None:
    answer = json.loads(out)
    assert answer["object"] == "chat.completion" and answer["model"] == CHAT_MODEL, answer
    assert answer["choices"][0]["message"]["content"].strip(), answer
    assert 0 < answer["usage"]["completion_tokens"] <= NUM_PREDICT, answer


def check_curl_embeddings(out: str) -> None:
    answer = json.loads(out)
    assert [len(v) for v in answer["embeddings"]] == [EMBED_DIMENSIONS] * 2, answer


def check_curl_health(out: str) -> None:
    answer = json.loads(out)
    assert answer["status"] == "healthy" and answer["engine"]["state"] == "running", answer


# ---------------------------------------------------------------- the examples


@dataclass(frozen=True)
class Example:
    name: str
    toolchain: str  # bash, python, client (python with shared_ollama_client), node, go
    command: tuple[str, ...]  # run in the example's directory
    directory: str
    check: Callable[[str], None]
    requests: int  # generations and embeddings it sends, found in its tenant's usage


def sdk_lines(out: str) -> None:
    check_lines(out, embeddings=True)


def go_lines(out: str) -> None:
    check_lines(out, embeddings=False)


def client_lines(out: str) -> None:
    check_lines(out, embeddings=True)
    assert field(out, "health") == "healthy", out


PY = sys.executable
ALL = [
    Example("curl-chat", "bash", ("bash", "chat.sh"), "curl", check_curl_chat, 1),
    Example("curl-chat-stream", "bash", ("bash", "chat_stream.sh"), "curl", check_curl_stream, 1),
    Example("curl-openai-chat", "bash", ("bash", "openai_chat.sh"), "curl", check_curl_openai, 1),
    Example("curl-embeddings", "bash", ("bash", "embeddings.sh"), "curl", check_curl_embeddings, 1),
    Example("curl-health", "bash", ("bash", "health.sh"), "curl", check_curl_health, 0),
    Example("python-client", "client", (PY, "client.py"), "python", client_lines, 3),
    Example("python-ollama", "python", (PY, "ollama_sdk.py"), "python", sdk_lines, 3),
    Example("python-openai", "python", (PY, "openai_sdk.py"), "python", sdk_lines, 3),
    Example("typescript-ollama", "node", ("npx", "--no-install", "tsx", "ollama.ts"), "typescript", sdk_lines, 3),
    Example("typescript-openai", "node", ("npx", "--no-install", "tsx", "openai.ts"), "typescript", sdk_lines, 3),
    Example("go", "go", ("go", "run", "."), "go", go_lines, 2),
]


def prepare(example: Example, tmp_path: Path) -> dict[str, str]:
    """The toolchain's checks and the environment the example runs with (never the home directory's caches)."""
    if example.toolchain == "bash":
        toolchain("curl", "apt-get install curl")
        return {}
    if example.toolchain == "client":
        installed = importlib.util.find_spec("shared_ollama_client") is not None
        requirement(installed, "shared_ollama_client is not installed (pip install -e clients/python)")
        return {}
    if example.toolchain == "node":
        toolchain("node", "scripts/core/test.sh installs it: apt-get install nodejs npm")
        toolchain("npx", "scripts/core/test.sh installs it: apt-get install npm")
        installed = (EXAMPLES / "typescript" / "node_modules" / ".bin" / "tsx").exists()
        requirement(installed, "examples/typescript has no node_modules (scripts/core/test.sh runs npm ci there)")
        return {"npm_config_update_notifier": "false", "npm_config_cache": str(tmp_path / "npm")}
    if example.toolchain == "go":
        toolchain("go", "scripts/core/test.sh installs it: apt-get install golang-go")
        return {
            "GOCACHE": str(tmp_path / "go-cache"),
            "GOPATH": str(tmp_path / "go-path"),
            "GOTOOLCHAIN": "local",
            "GOPROXY": "off",
            "GOFLAGS": "",
        }
    return {}


def tenant_requests(gateway_url: str, tenant: str) -> int:
    headers = {"X-Shared-Ollama-Project": tenant}
    params = {"window": "1h", "tenant": tenant}
    rows = httpx.get(f"{gateway_url}/api/v1/usage", params=params, headers=headers, timeout=10).json()["rows"]
    return sum(int(row["requests"]) for row in rows)


@pytest.mark.parametrize("example", ALL, ids=[e.name for e in ALL])
def test_example_runs(example: Example, gateway_url: str, tmp_path: Path) -> None:
    tenant = f"example-{example.name}"
    env = {
        **prepare(example, tmp_path),
        "SHARED_OLLAMA_URL": gateway_url,
        "SHARED_OLLAMA_PROJECT": tenant,
    }
    out = run(list(example.command), EXAMPLES / example.directory, env)
    example.check(out)
    if example.requests:  # the example named its tenant: the service counted its requests there
        poll(lambda: tenant_requests(gateway_url, tenant) >= example.requests, f"the requests of tenant {tenant}")
        assert tenant_requests(gateway_url, tenant) == example.requests


def test_client_example_names_a_refusal(gateway_url: str, tmp_path: Path) -> None:
    """The client example's typed error: an unknown model is a 404 ``model_not_found``, said with its request id."""
    prepare(next(e for e in ALL if e.toolchain == "client"), tmp_path)
    done = subprocess.run(
        [PY, "client.py"],
        cwd=EXAMPLES / "python",
        env={**os.environ, "SHARED_OLLAMA_URL": gateway_url, "SHARED_OLLAMA_MODEL": "no-such-model:1b"},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    refusal = re.search(r"^refused: model_not_found: .*no-such-model.* \(request (\S+)\)$", done.stderr, re.MULTILINE)
    assert refusal is not None and refusal.group(1) != "None", done.stderr


def test_typescript_examples_type_check(tmp_path: Path) -> None:
    """``tsc`` (strict, tsconfig.json) accepts the TypeScript examples against the pinned packages' types."""
    env = prepare(next(e for e in ALL if e.toolchain == "node"), tmp_path)
    run(["npx", "--no-install", "tsc", "-p", "."], EXAMPLES / "typescript", env)


def test_examples_are_all_run() -> None:
    """A new example file is added to the list above (so it is executed), or this fails."""
    run_here = {(e.directory, e.command[-1]) for e in ALL}
    files = {
        (path.parent.name, path.name)
        for pattern in ("curl/*.sh", "python/*.py", "typescript/*.ts")
        for path in EXAMPLES.glob(pattern)
    }
    files.add(("go", "."))
    assert files <= run_here, sorted(files - run_here)
