"""The supervisor with stand-in `ollama` executables: start-up, crash loops with backoff, stop escalation."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from shared_ollama.backends.supervisor import EngineState, EngineSupervisor
from shared_ollama.settings import Settings
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def _standin(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "ollama"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _settings(tmp_path: Path, binary: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "engine": "ollama",
        "ollama_binary": str(binary),
        "data_dir": tmp_path,
        "engine_start_timeout": 20.0,
        "engine_restart_backoff": 0.05,
        "engine_restart_backoff_max": 0.2,
        "engine_stop_timeout": 1.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


FAKE_SERVE = f'cd "{ROOT}" && exec "{sys.executable}" -m tests.support.fake_engine --port "${{OLLAMA_HOST##*:}}"\n'


async def test_managed_standin_starts_and_stops_with_sigterm(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(_settings(tmp_path, _standin(tmp_path, FAKE_SERVE)))
    await supervisor.start()
    try:
        snap = supervisor.snapshot()
        assert snap["state"] == "running"
        assert snap["kind"] == "ollama"
        assert snap["version"] == "0.0.0-fake"
        pid = supervisor.pid
        assert pid is not None
    finally:
        await supervisor.stop()
    assert supervisor.state == EngineState.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_engine_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    body = 'trap "" TERM\n' + FAKE_SERVE.replace("exec ", "")
    supervisor = EngineSupervisor(_settings(tmp_path, _standin(tmp_path, body)))
    await supervisor.start()
    assert supervisor.state == EngineState.RUNNING
    pid = supervisor.pid
    assert pid is not None
    await asyncio.wait_for(supervisor.stop(), timeout=15)
    assert supervisor.pid is None
    for _ in range(200):  # bounded: SIGKILL is delivered asynchronously
        if not _live_members(pid):
            break
        await asyncio.sleep(0.02)
    assert not _live_members(pid), "the shell and the engine it started are both gone"


def _live_members(group: int) -> list[int]:
    """Processes of a process group that are still running (zombies waiting for a reaper do not count)."""
    alive = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(stat_file.parent.name))
    return alive


async def test_crash_loop_backs_off_and_reports_down(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(_settings(tmp_path, _standin(tmp_path, "exit 3\n")))
    await supervisor.start()
    try:
        assert supervisor.state == EngineState.DOWN
        assert "exited with code 3" in (supervisor.last_error or "")
        for _ in range(400):  # bounded: the watcher restarts with backoff 0.05 -> 0.2 s
            if supervisor.restarts >= 3:
                break
            await asyncio.sleep(0.05)
        assert supervisor.restarts >= 3
        assert supervisor.state in (EngineState.DOWN, EngineState.RESTARTING, EngineState.STARTING)
    finally:
        await supervisor.stop()


async def test_ollama_mode_without_binary_is_a_clear_error(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(_settings(tmp_path, tmp_path / "missing-ollama"))
    with pytest.raises(RuntimeError, match="not on PATH"):
        await supervisor.start()


async def test_auto_prefers_a_running_engine(tmp_path: Path, fake_engine: tuple[str, object]) -> None:
    url, _ = fake_engine
    supervisor = EngineSupervisor(_settings(tmp_path, tmp_path / "unused", engine="auto", ollama_url=url))
    await supervisor.start()
    try:
        assert supervisor.snapshot()["kind"] == "external"
        assert supervisor.pid is None
    finally:
        await supervisor.stop()


async def test_auto_without_ollama_picks_embedded(tmp_path: Path) -> None:
    from shared_ollama.backends.supervisor import plan_engine

    settings = _settings(tmp_path, tmp_path / "missing", engine="auto", ollama_url=f"http://127.0.0.1:{free_port()}")
    plan = await plan_engine(settings)
    assert plan.kind == "embedded"
    assert plan.command[-5:-3] == ["engine", "--host"]


async def test_stalled_engine_is_reported_and_refused_until_it_answers_again(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        _standin(tmp_path, FAKE_SERVE),
        engine_health_interval=0.1,
        engine_probe_timeout=0.3,
        engine_probe_failures=2,
    )
    supervisor = EngineSupervisor(settings)
    await supervisor.start()
    pid = supervisor.pid
    assert pid is not None and supervisor.is_available()
    os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(200):  # bounded: two unanswered probes, 0.1 s apart, 0.3 s each
            if supervisor.state == EngineState.STALLED:
                break
            await asyncio.sleep(0.05)
        assert supervisor.state == EngineState.STALLED
        assert supervisor.last_error == (
            "engine does not answer within 0.3 s (2 health probes in a row); its process is alive"
        )
        assert not supervisor.is_available()
        assert supervisor.pid == pid and supervisor.restarts == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        for _ in range(200):  # bounded: the next probe is answered
            if supervisor.state == EngineState.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert supervisor.state == EngineState.RUNNING
        assert supervisor.last_error is None and supervisor.is_available()
        assert supervisor.pid == pid and supervisor.restarts == 0
    finally:
        await supervisor.stop()
