"""A throwaway ``redis-server`` on a free loopback port, for the tests of the shared (Redis) state."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import free_port

READY_TIMEOUT = 10.0


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def redis_server() -> Iterator[str]:
    """Run ``redis-server`` (no persistence) until the block ends; yields ``redis://127.0.0.1:N/0``."""
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="shared-ollama-redis-") as work:
        log_path = Path(work) / "redis.log"
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [binary, "--save", "", "--appendonly", "no", "--port", str(port), "--bind", "127.0.0.1"],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not _answers_ping(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer PING within {READY_TIMEOUT}s")
                time.sleep(0.05)  # readiness polling, bounded by the deadline
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)
