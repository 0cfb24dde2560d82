"""Chooses the engine, starts it as a child process when it is ours, watches it, restarts it, stops it.

Modes (``SHARED_OLLAMA_ENGINE``): ``external`` uses the engine at ``ollama_url`` and only watches it;
``ollama`` runs ``ollama serve``; ``embedded`` runs ``shared-ollama engine``; ``auto`` takes a running
Ollama at ``ollama_url`` if one answers, else an ``ollama`` binary on PATH, else the embedded engine.
A managed engine listens on a loopback port; an engine already answering on that port is used, not
started twice. An embedded engine gets a fresh token at every start (in its environment, never on its command
line) and refuses requests without it: only this gateway can use it (``engine/access.py``).
``serve`` starts the managed engine before importing the app and hands it over (``head_start.py``): the
supervisor adopts that process instead of starting one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from shared_ollama.settings import Settings

if TYPE_CHECKING:
    from shared_ollama.backends.head_start import AdoptedProcess, HeadStart

log = logging.getLogger(__name__)


class EngineState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    """A managed engine whose process is alive but does not answer its health probes (stopped, hung)."""
    RESTARTING = "restarting"
    DOWN = "down"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EnginePlan:
    """What the supervisor decided to run."""

    kind: str  # "external", "ollama" or "embedded"
    base_url: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return bool(self.command)


def _free_loopback_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


TOKEN_ENV = "SHARED_OLLAMA_ENGINE_TOKEN"
"""How a managed embedded engine receives its token (``Settings.engine_token``)."""


def bearer(token: str | None) -> dict[str, str]:
    """The header that carries an engine token (none without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def probe_version(base_url: str, wait: float = 1.5, token: str | None = None) -> str | None:
    """The engine's version if an Ollama-API server answers at ``base_url``, else None."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session,
            session.get(f"{base_url}/api/version", headers=bearer(token)) as resp,
        ):
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
            return str(body.get("version", "unknown")) if isinstance(body, dict) else "unknown"
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


async def plan_engine(settings: Settings) -> EnginePlan:
    mode = settings.engine
    if mode == "external":
        return EnginePlan("external", settings.ollama_url)
    if mode == "auto" and await probe_version(settings.ollama_url) is not None:
        log.info("using the Ollama already running at %s", settings.ollama_url)
        return EnginePlan("external", settings.ollama_url)
    host = settings.engine_host
    port = settings.engine_port or _free_loopback_port(host)
    base_url = f"http://{host}:{port}"
    ollama_path = shutil.which(settings.ollama_binary)
    if mode == "ollama" or (mode == "auto" and ollama_path):
        if not ollama_path:
            raise RuntimeError(f"SHARED_OLLAMA_ENGINE=ollama but '{settings.ollama_binary}' is not on PATH")
        return EnginePlan("ollama", base_url, [ollama_path, "serve"], {"OLLAMA_HOST": f"{host}:{port}"})
    command = [sys.executable, "-m", "shared_ollama.cli", "engine", "--host", host, "--port", str(port)]
    return EnginePlan("embedded", base_url, command, {})


def launch_env(plan: EnginePlan, settings: Settings) -> tuple[dict[str, str], str | None, Path]:
    """The environment to start ``plan``'s engine with, its new token (embedded engines only; in the
    environment, never on the command line) and the log file its output goes to."""
    env = dict(os.environ)
    env.update(plan.env)
    env.pop(TOKEN_ENV, None)
    token = secrets.token_urlsafe(32) if plan.kind == "embedded" else None
    if token:
        env[TOKEN_ENV] = token
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return env, token, log_dir / "engine.log"


class EngineSupervisor:
    """Owns the engine process (when managed) and knows whether the engine is usable."""

    def __init__(self, settings: Settings, head_start: HeadStart | None = None) -> None:
        self._settings = settings
        self._head_start = head_start
        """An engine ``serve`` started before the app was imported (``head_start.py``), adopted by ``start``."""
        self.plan: EnginePlan | None = None
        self.state = EngineState.STOPPED
        self.version: str | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at: float | None = None
        self._proc: asyncio.subprocess.Process | AdoptedProcess | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.token: str | None = None
        """The token of the managed embedded engine now running (a new one at every start); None otherwise."""

    @property
    def base_url(self) -> str:
        if self.plan is None:
            raise RuntimeError("supervisor not started")
        return self.plan.base_url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def is_available(self) -> bool:
        """False while a managed engine is known to be dead or stalled; requests then fail fast with
        backend_unavailable instead of waiting behind it until their deadline.

        An external engine is always tried: a refused connection is as fast as the check, and the request
        succeeds as soon as the engine is back, without waiting for the next health probe.
        """
        return self.state not in (EngineState.RESTARTING, EngineState.STALLED)

    async def start(self) -> None:
        self._stopping = False
        head, self._head_start = self._head_start, None
        if head is not None:  # serve started the engine while the app was imported: watch it as our own
            self.plan, self.token, self._proc = head.plan, head.token, head.adopt()
            self.state = EngineState.STARTING
            await self._wait_ready()
            self.started_at = time.time()
            self._task = asyncio.create_task(self._watch(), name="engine-supervisor")
            return
        self.plan = await plan_engine(self._settings)
        self.state = EngineState.STARTING
        if self.plan.managed:
            self.version = await probe_version(self.plan.base_url)
            if self.version is not None:
                log.info("an engine already answers at %s; using it", self.plan.base_url)
                self.plan = EnginePlan("external", self.plan.base_url)
            else:
                await self._spawn_and_wait()
        if not self.plan.managed:
            self.version = self.version or await probe_version(self.plan.base_url)
            self.state = EngineState.RUNNING if self.version else EngineState.DOWN
        self.started_at = time.time()
        self._task = asyncio.create_task(self._watch(), name="engine-supervisor")

    async def _spawn_and_wait(self) -> None:
        assert self.plan is not None
        env, self.token, log_path = launch_env(self.plan, self._settings)
        with open(log_path, "ab") as out:  # noqa: ASYNC230 (once per engine start)
            self._proc = await asyncio.create_subprocess_exec(
                *self.plan.command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        log.info("started %s engine (pid %s) at %s", self.plan.kind, self._proc.pid, self.plan.base_url)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        """Until the engine just started answers (RUNNING), exits or overruns ``engine_start_timeout`` (DOWN,
        and stopped)."""
        assert self.plan is not None and self._proc is not None
        deadline = time.monotonic() + self._settings.engine_start_timeout
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                break
            self.version = await probe_version(self.plan.base_url, token=self.token)
            if self.version is not None:
                self.state = EngineState.RUNNING
                self.last_error = None
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), timeout=0.1)
        self.last_error = (
            f"engine exited with code {self._proc.returncode} during start-up"
            if self._proc.returncode is not None
            else f"engine not ready after {self._settings.engine_start_timeout}s"
        )
        self.state = EngineState.DOWN
        log.error("%s", self.last_error)
        await self._terminate()

    async def _watch(self) -> None:
        backoff = self._settings.engine_restart_backoff
        while not self._stopping:
            if self.plan is not None and self.plan.managed:
                await self._watch_process()
                if self._stopping:
                    return
                self.state = EngineState.RESTARTING
                code = self._proc.returncode if self._proc is not None else None
                self.last_error = f"engine exited with code {code}; restarting in {backoff:.1f}s"
                log.warning("%s", self.last_error)
                await asyncio.sleep(backoff)
                if self._stopping:
                    return
                self.restarts += 1
                await self._spawn_and_wait()
                if self.state == EngineState.RUNNING:
                    backoff = self._settings.engine_restart_backoff
                else:
                    backoff = min(backoff * 2, self._settings.engine_restart_backoff_max)
            else:
                await asyncio.sleep(self._settings.engine_health_interval)
                assert self.plan is not None
                self.version = await probe_version(self.plan.base_url)
                if self.version is None:
                    self.last_error = f"engine at {self.plan.base_url} does not answer"
                    self.state = EngineState.DOWN
                else:
                    self.state = EngineState.RUNNING
                    self.last_error = None

    async def _watch_process(self) -> None:
        """Until the managed engine exits: probe it every ``engine_health_interval``. After
        ``engine_probe_failures`` probes in a row unanswered within ``engine_probe_timeout`` it is STALLED
        (requests fail fast); its next answer makes it RUNNING again."""
        proc, settings = self._proc, self._settings
        if proc is None or proc.returncode is not None or self.plan is None:
            return
        exited = asyncio.ensure_future(proc.wait())
        failures = 0
        try:
            while True:
                done, _ = await asyncio.wait({exited}, timeout=settings.engine_health_interval)
                if done:
                    return
                version = await probe_version(self.plan.base_url, wait=settings.engine_probe_timeout, token=self.token)
                if exited.done() or self._stopping:
                    return
                failures = 0 if version is not None else failures + 1
                if version is not None:
                    self.version = version
                    if self.state == EngineState.STALLED:
                        log.info("the engine (pid %s) answers again", proc.pid)
                    self.state, self.last_error = EngineState.RUNNING, None
                elif failures >= settings.engine_probe_failures and self.state != EngineState.STALLED:
                    self.state = EngineState.STALLED
                    self.last_error = (
                        f"engine does not answer within {settings.engine_probe_timeout:g} s "
                        f"({failures} health probes in a row); its process is alive"
                    )
                    log.error("%s", self.last_error)
        finally:
            exited.cancel()

    async def _terminate(self) -> None:
        """SIGTERM, then SIGKILL to the engine's whole process group (Ollama runs its models as children)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=self._settings.engine_stop_timeout)
        except TimeoutError:
            log.warning("engine did not stop after SIGTERM; sending SIGKILL to its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: the group is the engine's
            await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children the engine left behind

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._terminate()
        self.state = EngineState.STOPPED

    def snapshot(self) -> dict[str, object]:
        plan = self.plan
        return {
            "state": self.state.value,
            "kind": plan.kind if plan else None,
            "url": plan.base_url if plan else None,
            "managed": plan.managed if plan else False,
            "pid": self.pid,
            "version": self.version,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }
