"""The engine ``serve`` starts before importing the app: adopted by the supervisor, watched, restarted and stopped
as its own; stopped by ``discard`` when never adopted. With a stand-in ``ollama`` (the scripted engine)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from shared_ollama.backends.head_start import AdoptedProcess, start_engine_early
from shared_ollama.backends.supervisor import EngineState, EngineSupervisor
from shared_ollama.settings import Settings
from tests.integration.test_supervisor import FAKE_SERVE, _settings, _standin


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_supervisor_adopts_restarts_and_stops_the_engine_started_ahead(tmp_path: Path) -> None:
    settings = _settings(tmp_path, _standin(tmp_path, FAKE_SERVE))
    head = await asyncio.to_thread(start_engine_early, settings)
    assert head is not None
    first = head.process.pid
    supervisor = EngineSupervisor(settings, head)
    await supervisor.start()
    try:
        assert head.adopted
        assert supervisor.pid == first, "the engine started ahead is the one in use, not a second one"
        assert supervisor.state == EngineState.RUNNING
        assert supervisor.snapshot()["version"] == "0.0.0-fake"
        os.kill(first, signal.SIGKILL)
        for _ in range(400):  # bounded: the watcher notices the exit and restarts after 0.05 s
            if supervisor.restarts == 1 and supervisor.state == EngineState.RUNNING:
                break
            await asyncio.sleep(0.05)
        assert supervisor.restarts == 1 and supervisor.state == EngineState.RUNNING
        second = supervisor.pid
        assert second is not None and second != first
        assert head.process.returncode == -signal.SIGKILL, "the adopted process was reaped"
    finally:
        await supervisor.stop()
    assert not _alive(second)
    head.discard()  # adopted: nothing left to do, and nothing fails


async def test_an_engine_never_adopted_is_stopped_by_discard(tmp_path: Path) -> None:
    head = await asyncio.to_thread(start_engine_early, _settings(tmp_path, _standin(tmp_path, FAKE_SERVE)))
    assert head is not None
    pid = head.process.pid
    head.discard()
    assert head.process.returncode is not None
    assert not _alive(pid)


async def test_nothing_is_started_ahead_for_an_external_engine(tmp_path: Path) -> None:
    settings = Settings(engine="external", ollama_url="http://127.0.0.1:9", data_dir=tmp_path)
    assert await asyncio.to_thread(start_engine_early, settings) is None


async def test_an_adopted_process_is_awaited_without_a_thread(tmp_path: Path) -> None:
    import subprocess

    process = subprocess.Popen(["sleep", "30"], start_new_session=True)  # noqa: ASYNC220 (what serve does)
    adopted = AdoptedProcess(process)
    waiting = asyncio.ensure_future(adopted.wait())
    done, _ = await asyncio.wait({waiting}, timeout=0.2)
    assert not done and adopted.returncode is None
    adopted.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(waiting, timeout=10) == -signal.SIGTERM
    assert adopted.returncode == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
