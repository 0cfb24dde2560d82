"""Start and stop the service's own processes on free loopback ports, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 90.0) -> None:
    """Poll ``url`` until it answers 2xx; fail early when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.1)  # polling interval for readiness, not synchronisation between test steps
    raise TimeoutError(f"{url} not ready after {timeout}s: {last_error}")


def spawn(
    args: list[str], env: Mapping[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``python -m shared_ollama.cli <args>`` with the test interpreter."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "shared_ollama.cli", *args],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextmanager
def fake_engine_process(log_path: Path) -> Iterator[str]:
    """The scripted engine (``tests/support/fake_engine.py``) in a process of its own; yields its URL."""
    root = Path(__file__).resolve().parents[2]
    port = free_port()
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fake_engine", "--port", str(port)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": python_path},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/api/version", proc, timeout=30)
        yield url
    finally:
        stop(proc)


def poll(check: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Wait (bounded) for a state the service reaches on its own, such as a background task's pass."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.1)  # polling interval, not synchronisation between test steps
