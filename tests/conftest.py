"""Shared test configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_ollama.service.poml.renderer import NAMESPACES
from tests.support.ci import in_ci
from tests.support.redis_server import redis_server, redis_server_binary

LONG_FIRST = ("tests/reliability/test_schema_fuzz.py",)
"""Single tests of about a minute: run first, so that with two workers one starts them at once instead of
finishing the run alone with them while the other worker idles."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _no_developer_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test runs without the caller's SHARED_OLLAMA_* variables, Hugging Face tokens or home directory,
    and in an empty working directory (no ./config files): only what the test itself sets. Processes the tests
    start inherit this environment."""
    for name in list(os.environ):
        if name.startswith(("SHARED_OLLAMA_", "HF_", "HUGGING_FACE_", "OLLAMA_")):
            monkeypatch.delenv(name)
    place = tmp_path_factory.mktemp("cwd")
    (place / "home").mkdir()
    monkeypatch.setenv("HOME", str(place / "home"))
    monkeypatch.chdir(place)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session. Skipped when it is not installed, except in CI, where it fails."""
    if redis_server_binary() is None:
        reason = "redis-server is not installed (scripts/core/test.sh installs it: apt-get install redis-server)"
        if in_ci(os.environ):
            pytest.fail(f"CI must run the Redis tests: {reason}", pytrace=False)
        pytest.skip(reason)
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def poml_isolation() -> None:
    """Skip, with the reason, a test that needs POML's isolated renders where this host cannot make the namespaces
    (a container whose seccomp profile forbids user namespaces, say): the service then refuses templates with a 501,
    which its own tests prove."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare command: this host cannot isolate POML renders")
    try:
        probe = subprocess.run(
            [unshare, *NAMESPACES, "true"], capture_output=True, text=True, timeout=10, check=False, env={}
        )
    except subprocess.TimeoutExpired:
        pytest.skip("unshare did not finish: this host cannot isolate POML renders")
    if probe.returncode != 0:
        pytest.skip(f"this host cannot isolate POML renders: {probe.stderr.strip()[:200]}")
