"""The managed engine started before the gateway's code is imported, so the two start-ups overlap.

``shared-ollama serve`` spends about two seconds importing the app before its lifespan would start the engine,
and the engine then spends as long again importing llama.cpp and binding its port (bench/coldstart.py). ``serve``
instead decides the engine (``plan_engine``, as the supervisor would) and spawns it first; the supervisor then
adopts the running process (``AdoptedProcess``) and watches, restarts and stops it as one it started itself. An
engine never adopted (the app failed to start) is stopped by ``HeadStart.discard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from dataclasses import dataclass

from shared_ollama.backends.supervisor import EnginePlan, launch_env, plan_engine, probe_version
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)

_STOP_SECONDS = 5.0


class AdoptedProcess:
    """A ``subprocess.Popen`` child with the part of ``asyncio.subprocess.Process`` the supervisor uses: ``pid``,
    ``returncode``, ``send_signal`` and an awaitable ``wait`` (woken by the process's pidfd, no thread)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def send_signal(self, sig: int) -> None:
        self._process.send_signal(sig)

    async def wait(self) -> int:
        code = self._process.poll()
        if code is not None:
            return code
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        fd = os.pidfd_open(self.pid)  # readable once the process has exited
        loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self._process.wait()


@dataclass
class HeadStart:
    """An engine process started ahead of the app, waiting to be adopted by the supervisor."""

    plan: EnginePlan
    process: subprocess.Popen[bytes]
    token: str | None
    adopted: bool = False

    def adopt(self) -> AdoptedProcess:
        self.adopted = True
        return AdoptedProcess(self.process)

    def discard(self) -> None:
        """Stop the engine unless the supervisor adopted it (then it is the supervisor's to stop)."""
        if self.adopted or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # started in a session of its own
            self.process.wait()


def start_engine_early(settings: Settings) -> HeadStart | None:
    """Spawn the managed engine now, without waiting for it to answer; None when there is none to start (an
    external engine, a fleet of engine hosts, or one already answering on the configured port: the supervisor then
    uses it)."""
    return asyncio.run(_start(settings))


async def _start(settings: Settings) -> HeadStart | None:
    if settings.engines_file is not None or settings.engine_urls:
        return None  # a fleet of engine hosts: this gateway starts no engine
    plan = await plan_engine(settings)
    if not plan.managed or await probe_version(plan.base_url) is not None:
        return None
    env, token, log_path = launch_env(plan, settings)
    with open(log_path, "ab") as out:  # noqa: ASYNC230 (once, before anything else runs)
        process = subprocess.Popen(  # noqa: ASYNC220 (not waited for here)
            plan.command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    log.info("started %s engine (pid %s) at %s", plan.kind, process.pid, plan.base_url)
    return HeadStart(plan=plan, process=process, token=token)
