"""End-to-end fixtures: the real embedded engine with the real offline models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_ollama.settings import Settings
from tests.support.processes import free_port, spawn, stop, wait_http_ok


@pytest.fixture(scope="session")
def model_store() -> Path:
    """The model store with the offline defaults (prepared by scripts/core/test.sh; prepared here if not)."""
    from shared_ollama.engine.defaults import install_defaults

    settings = Settings()
    install_defaults(settings)
    return settings.store_dir


@pytest.fixture(scope="session")
def engine_url(model_store: Path, artifacts_dir: Path) -> Iterator[str]:
    """A real embedded engine process on a free loopback port, shared by the session."""
    port = free_port()
    proc = spawn(
        ["engine", "--host", "127.0.0.1", "--port", str(port)],
        env={"SHARED_OLLAMA_MODELS_DIR": str(model_store)},
        log_path=artifacts_dir / "engine-e2e.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/api/version", proc)
        yield url
    finally:
        stop(proc)
