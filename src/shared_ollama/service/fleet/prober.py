"""Probing the fleet's hosts, and what the fleet knows from the probes.

``probe_host`` asks one host, through the one aiohttp session it is given, whether it answers and what it has:
an ``ollama`` host ``GET /api/version`` (health), ``/api/ps`` (loaded models) and ``/api/tags`` (installed ones),
at once; an ``openai`` host ``GET /v1/models`` (health and its model ids, all counted as loaded: vLLM, SGLang and
llama-server serve what they list). Each probe is bounded by ``timeout`` and a body size, sends the host's
``api_key`` as a Bearer token, and never raises: a failure is a ``HostStatus`` with ``ok`` false and an error
from which the key and any URL password are scrubbed. Model names are compared canonically
(``protocol.names.canonical_model``), and each host's own spelling is kept for requests sent to it.

``FleetMonitor`` holds the hosts, their circuit breakers (``health``) and latest statuses: ``refresh_all()``
probes every host (concurrently, bounded) whose breaker allows it, so a ``down`` host gets its one half-open
probe when its backoff has passed; ``start(interval)`` / ``stop()`` run that in a task. ``hosts_for(model)`` are
the ``up`` hosts that serve a model (the configured ``models`` when given, else what the host lists),
``warm_hosts(model)`` those of them that have it loaded, and ``snapshot()`` is the body of ``GET /api/v1/engines``
(no key, URLs masked). Call ``refresh_all()`` once before serving: a host never probed serves only its configured
``models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.fleet.config import Host
from shared_ollama.service.fleet.health import BreakerPolicy, BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
"""Seconds a host gets to answer its probe (all of its requests together)."""
MAX_PROBE_BYTES = 4 * 2**20
"""Largest answer read from a probe (a longer one is a failed probe)."""
PROBE_CONCURRENCY = 8
"""Hosts probed at once by ``refresh_all``."""


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What one probe found. ``loaded`` and ``installed`` are canonical names; ``names`` maps each to the host's
    own spelling. A failed probe keeps the lists of the last good one (``ok`` false, ``error`` set)."""

    ok: bool
    loaded: frozenset[str] = frozenset()
    installed: frozenset[str] = frozenset()
    error: str | None = None
    names: Mapping[str, str] = field(default_factory=dict, compare=False)
    checked_at: float | None = None
    """Wall-clock time of the probe (set by the monitor)."""


class _ProbeError(Exception):
    pass


def _scrub(text: str, host: Host) -> str:
    """``text`` without the host's api_key or the password of its URL."""
    secrets = [host.api_key]
    with contextlib.suppress(ValueError):
        secrets.append(urlsplit(host.url).password)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _read_bounded(response: aiohttp.ClientResponse, path: str, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise _ProbeError(f"GET {path}: an answer of {response.content_length} bytes, over the {limit} bytes allowed")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise _ProbeError(f"GET {path}: an answer over the {limit} bytes allowed")
    return bytes(body)


async def _get_json(session: aiohttp.ClientSession, host: Host, path: str) -> Any:
    try:
        async with session.get(host.url + path, headers=host.auth_headers(), allow_redirects=False) as response:
            body = await _read_bounded(response, path, MAX_PROBE_BYTES)
            if response.status != 200:
                hint = " (check the host's api_key)" if response.status in (401, 403) else ""
                raise _ProbeError(f"GET {path}: HTTP {response.status}{hint}")
    except aiohttp.ClientConnectorError as exc:
        raise _ProbeError(f"GET {path}: cannot connect ({exc.os_error.strerror or exc.os_error})") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise _ProbeError(f"GET {path}: {type(exc).__name__}: {exc}") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _ProbeError(f"GET {path}: the answer is not JSON") from None


def _names(body: Any, path: str, list_key: str, keys: Sequence[str]) -> dict[str, str]:
    """Canonical name -> the host's spelling, from ``{list_key: [{key: name, ...}, ...]}``."""
    items = body.get(list_key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise _ProbeError(f"GET {path}: unexpected answer (no '{list_key}' list)")
    found: dict[str, str] = {}
    for item in items:
        name = next((item[k] for k in keys if isinstance(item, dict) and isinstance(item.get(k), str)), None)
        if name:
            found.setdefault(canonical_model(name), name)
    return found


async def _probe_ollama(session: aiohttp.ClientSession, host: Host) -> HostStatus:
    answers = await asyncio.gather(
        _get_json(session, host, "/api/version"),
        _get_json(session, host, "/api/ps"),
        _get_json(session, host, "/api/tags"),
        return_exceptions=True,
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    version, ps, tags = answers
    if not isinstance(version, dict) or not isinstance(version.get("version"), str):
        raise _ProbeError("GET /api/version: unexpected answer (no 'version')")
    loaded = _names(ps, "/api/ps", "models", ("name", "model"))
    installed = _names(tags, "/api/tags", "models", ("name", "model"))
    return HostStatus(True, frozenset(loaded), frozenset(installed), names={**loaded, **installed})


async def _probe_openai(session: aiohttp.ClientSession, host: Host) -> HostStatus:
    listed = _names(await _get_json(session, host, "/v1/models"), "/v1/models", "data", ("id",))
    return HostStatus(True, frozenset(listed), frozenset(listed), names=listed)


async def probe_host(session: aiohttp.ClientSession, host: Host, *, within: float = PROBE_TIMEOUT) -> HostStatus:
    """One probe of ``host``, all of it within ``within`` seconds; never raises (a failure is ``ok=False`` with
    its error, secrets scrubbed)."""
    probe = _probe_ollama if host.kind == "ollama" else _probe_openai
    try:
        async with asyncio.timeout(within):
            return await probe(session, host)
    except TimeoutError:
        return HostStatus(False, error=f"no answer to the probe within {within:g} s")
    except _ProbeError as exc:
        return HostStatus(False, error=_scrub(str(exc), host))


class FleetMonitor:
    """The hosts, their breakers and latest statuses. One event loop; not shared between threads."""

    def __init__(
        self,
        hosts: Sequence[Host],
        session: aiohttp.ClientSession,
        *,
        policy: BreakerPolicy | None = None,
        probe_timeout: float = PROBE_TIMEOUT,
        concurrency: int = PROBE_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not hosts:
            raise ValueError("a fleet has at least one host")
        if len({host.name for host in hosts}) != len(hosts):
            raise ValueError("two hosts have the same name")
        if probe_timeout <= 0 or concurrency < 1:
            raise ValueError("probe_timeout must be > 0 and concurrency at least 1")
        self._hosts = {host.name: host for host in hosts}
        self._session = session
        self._breakers = {host.name: CircuitBreaker(policy, clock=clock, wall=wall) for host in hosts}
        self._statuses: dict[str, HostStatus] = {}
        self._probe_timeout = probe_timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._wall = wall
        self._task: asyncio.Task[None] | None = None

    @property
    def hosts(self) -> tuple[Host, ...]:
        return tuple(self._hosts.values())

    def host(self, name: str) -> Host:
        return self._hosts[name]

    def breaker(self, name: str) -> CircuitBreaker:
        """The host's breaker: the pipeline records each request's outcome on it."""
        return self._breakers[name]

    def status(self, name: str) -> HostStatus | None:
        """The latest probe of the host (None before the first)."""
        return self._statuses.get(name)

    async def refresh(self, name: str) -> HostStatus | None:
        """Probe one host if its breaker allows (None when it is ``down`` within its backoff, or its half-open
        probe is already under way); record the outcome on the breaker."""
        host, breaker = self._hosts[name], self._breakers[name]
        if not breaker.allows_request():
            return None
        before = breaker.state
        status = await probe_host(self._session, host, within=self._probe_timeout)
        previous = self._statuses.get(name)
        if status.ok:
            breaker.record_success(probe=True)
        else:
            breaker.record_failure(status.error or "probe failed", probe=True)
            if previous is not None:  # keep what the host had; it is out of placement while down anyway
                status = dataclasses.replace(
                    status, loaded=previous.loaded, installed=previous.installed, names=previous.names
                )
        status = dataclasses.replace(status, checked_at=self._wall())
        self._statuses[name] = status
        if breaker.state is not before and (breaker.state is BreakerState.UP or before is BreakerState.UP):
            if breaker.state is BreakerState.UP:
                log.warning("engine host %s (%s) is up again", name, host.display_url)
            else:
                log.warning("engine host %s (%s) is down: %s", name, host.display_url, status.error)
        return status

    async def refresh_all(self) -> None:
        """Probe every host the breakers allow, at most ``concurrency`` at once."""

        async def one(name: str) -> None:
            async with self._limit:
                await self.refresh(name)

        await asyncio.gather(*(one(name) for name in self._hosts))

    async def run(self, interval: float, after_round: Callable[[], None] | None = None) -> None:
        """Refresh every ``interval`` seconds until cancelled (the first round one interval from now: the caller
        has just refreshed), calling ``after_round`` after each."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_all()
            except Exception:  # a bug in one pass must not end the monitoring
                log.exception("engine fleet refresh failed")
            if after_round is not None:
                after_round()

    def start(self, interval: float, after_round: Callable[[], None] | None = None) -> None:
        """Run ``run(interval, after_round)`` in a task (``stop()`` ends it)."""
        if self._task is not None and not self._task.done():
            raise RuntimeError("the fleet monitor is already running")
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self._task = asyncio.create_task(self.run(interval, after_round), name="fleet-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def serves(self, name: str, model: str) -> bool:
        """Whether the host serves ``model``: its configured ``models`` when given, else what it lists."""
        wanted = canonical_model(model)
        host = self._hosts[name]
        if host.models is not None:
            return wanted in host.models
        status = self._statuses.get(name)
        return status is not None and wanted in status.installed

    def is_warm(self, name: str, model: str) -> bool:
        """Whether the host's latest probe found ``model`` loaded."""
        status = self._statuses.get(name)
        return status is not None and canonical_model(model) in status.loaded

    def hosts_for(self, model: str) -> list[Host]:
        """The ``up`` hosts that serve ``model``, in configuration order."""
        return [h for h in self._hosts.values() if self._breakers[h.name].available and self.serves(h.name, model)]

    def warm_hosts(self, model: str) -> list[Host]:
        """Those of ``hosts_for(model)`` that have it loaded."""
        return [host for host in self.hosts_for(model) if self.is_warm(host.name, model)]

    def upstream_name(self, name: str, model: str) -> str:
        """``model`` as the host spells it (``Qwen/Qwen3-8B`` for ``Qwen/Qwen3-8B:latest``), else as given."""
        status = self._statuses.get(name)
        return status.names.get(canonical_model(model), model) if status is not None else model

    def snapshot(self, in_use: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
        """Per host, for ``GET /api/v1/engines``: no api_key, URLs masked. ``in_use``: slots in use per host
        name (the scheduler's counts), shown as ``slots_in_use`` when given."""
        out = []
        for host in self._hosts.values():
            status = self._statuses.get(host.name)
            breaker = self._breakers[host.name].snapshot()
            entry: dict[str, Any] = {
                "name": host.name,
                "kind": host.kind,
                "url": host.display_url,
                "state": breaker.pop("state"),
                "slots": host.slots,
                "weight": host.weight,
                "models": list(host.models) if host.models is not None else None,
                "loaded": sorted(status.loaded) if status else [],
                "installed_count": len(status.installed) if status else 0,
                "last_probe": status.checked_at if status else None,
                **breaker,
            }
            if in_use is not None:
                entry["slots_in_use"] = in_use.get(host.name, 0)
            out.append(entry)
        return out
