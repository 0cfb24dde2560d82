"""Start-up that fails after the engine is up stops the engine too; a port in use fails before anything starts."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import psutil
import pytest

from tests.support.processes import free_port, spawn, stop

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ENGINE_STARTED = re.compile(r"started embedded engine \(pid (\d+)\)")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _serve(model_store: Path, data_dir: Path, log: Path, env: dict[str, str], port: int) -> int:
    full_env = {
        "SHARED_OLLAMA_MODELS_DIR": str(model_store),
        "SHARED_OLLAMA_DATA_DIR": str(data_dir),
        "SHARED_OLLAMA_ENGINE": "embedded",
        "SHARED_OLLAMA_PRELOAD_MODELS": "false",
        **env,
    }
    proc = spawn(["serve", "--host", "127.0.0.1", "--port", str(port)], env=full_env, log_path=log)
    try:
        return proc.wait(timeout=120)
    finally:
        stop(proc)


def _break(case: str, data_dir: Path, tmp_path: Path) -> dict[str, str]:
    models = tmp_path / "models.yaml"
    models.write_text((ROOT / "config" / "models.yaml").read_text())
    env = {"SHARED_OLLAMA_MODELS_CONFIG": str(models)}
    if case == "unknown profile":
        env["SHARED_OLLAMA_PROFILE"] = "no-such-profile"
    elif case == "bad models file":
        models.write_text("profiles: [this is not a profile\n")
    elif case == "unwritable analytics store":
        (data_dir / "analytics.sqlite3").mkdir(parents=True)  # a directory where the database file must go
    return env


@pytest.mark.parametrize("case", ["unknown profile", "bad models file", "unwritable analytics store"])
def test_a_start_up_failing_after_the_engine_started_stops_the_engine(
    case: str, model_store: Path, tmp_path: Path, artifacts_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log = artifacts_dir / f"gateway-failed-start-{case.replace(' ', '-')}.log"
    log.unlink(missing_ok=True)
    env = _break(case, data_dir, tmp_path)

    code = _serve(model_store, data_dir, log, env, free_port())

    text = log.read_text()
    assert code != 0, text[-2000:]
    started = ENGINE_STARTED.search(text)
    assert started, f"the engine never started, so this case proves nothing:\n{text[-2000:]}"
    pid = int(started.group(1))
    assert _gone(pid), f"engine pid {pid} still running after the gateway exited ({case})"
    assert "gateway started" not in text


def test_a_port_in_use_fails_before_the_engine_starts(model_store: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    log = artifacts_dir / "gateway-port-in-use.log"
    log.unlink(missing_ok=True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        code = _serve(model_store, tmp_path / "data", log, {}, port)
    text = log.read_text()
    assert code != 0
    assert "cannot listen on 127.0.0.1" in text
    assert ENGINE_STARTED.search(text) is None
    assert "gateway started" not in text


async def test_shutdown_runs_every_step_even_when_one_raises(
    model_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared_ollama.app import create_app
    from shared_ollama.service.models.memory import MemoryManager
    from shared_ollama.settings import Settings

    async def broken_close(self: MemoryManager) -> None:  # the first step of shutdown
        raise RuntimeError("memory manager close failed")

    monkeypatch.setattr(MemoryManager, "close", broken_close)
    settings = Settings(
        _env_file=None,
        engine="embedded",
        models_dir=model_store,
        data_dir=tmp_path,
        engine_port=free_port(),
        preload_models=False,
        log_file=False,
    )
    app = create_app(settings)
    with pytest.raises(RuntimeError, match="memory manager close failed"):
        async with app.router.lifespan_context(app):
            pid = app.state.gateway.supervisor.pid
            assert pid is not None and not _gone(pid)
    assert _gone(pid), "a step that raised at shutdown kept the engine from being stopped"
