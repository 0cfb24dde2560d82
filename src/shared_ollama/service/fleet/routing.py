"""The fleet behind the engine client's interface: the calls that take no engine slot, routed or merged.

Requests that take a slot (chat, generate, embed through the gateway) go to the host the scheduler placed them
on (``HostClients.of``). Everything else the service asks "the engine" comes here, through the same methods as
``backends/client.py:EngineClient``, so the parts that use them (model operations, the cache, vision, the loaded
models' view) need not know about hosts:

- ``GET /api/tags`` and ``/api/ps``: the union over the hosts that are up, each model once (the first host's
  entry), with ``hosts``: the names of the hosts that have it;
- a call about one model (``/api/show``, loading it, counting tokens): a host that serves it, one that has it
  loaded first; unloading it (``keep_alive: 0`` with no prompt): every host that has it loaded;
- model management (``/api/create``, ``/api/copy``, ``/api/delete``, pulls, blob uploads): every ``ollama``
  host that is up (a blob upload is spooled to a temporary file in the data directory, then sent to each);
- anything else: the first ``ollama`` host that is up.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson

from shared_ollama.backends.client import EngineClient
from shared_ollama.backends.openai_host import OpenAIHostClient
from shared_ollama.errors import BackendUnavailable, ModelNotFound, SharedOllamaError
from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.fleet.config import Host
from shared_ollama.service.fleet.prober import FleetMonitor

JsonDict = dict[str, Any]
HostClient = EngineClient | OpenAIHostClient
TARGET_HOST: ContextVar[str | None] = ContextVar("shared_ollama_engine_host", default=None)
"""The engine host the request being served asked for (``X-Shared-Ollama-Engine-Host``; set by the API once the
name is checked; tasks inherit it): model management and the calls about one model then go to that host only."""
_MANAGED = ("/api/create", "/api/copy", "/api/pull")


@contextmanager
def targeted(host: str | None) -> Iterator[None]:
    """``TARGET_HOST`` set to ``host`` for the calls made inside (none: every host, as usual)."""
    token = TARGET_HOST.set(host)
    try:
        yield
    finally:
        TARGET_HOST.reset(token)


_SPOOL_CHUNK = 1 << 20


class FleetClient:
    """``EngineClient``'s interface over the fleet (see the module docstring for where each call goes)."""

    def __init__(
        self, monitor: FleetMonitor, clients: dict[str, HostClient], spool_dir: Path, list_timeout: float = 2.0
    ) -> None:
        self.monitor = monitor
        self.list_timeout = list_timeout
        """Seconds each host gets to give its model list for a merged view."""
        self.clients = clients
        self._spool_dir = spool_dir

    # ------------------------------------------------------------------ which hosts

    def _up(self, *, kind: str | None = None) -> list[Host]:
        target = TARGET_HOST.get()
        hosts = [h for h in self.monitor.hosts if self.monitor.breaker(h.name).available]
        hosts = [h for h in hosts if (kind is None or h.kind == kind) and target in (None, h.name)]
        if not hosts:
            if target is not None:
                kind_note = f" (or is not an {kind} host)" if kind else ""
                raise BackendUnavailable(f"the engine host '{target}' is not up{kind_note}: GET /api/v1/engines")
            what = f"no {kind} engine host" if kind else "no engine host"
            raise BackendUnavailable(f"{what} is up (GET /api/v1/engines shows why)")
        return hosts

    def host_for(self, model: str) -> Host:
        """A host that serves ``model`` and is up: an ``ollama`` host first (they answer every Ollama call), one
        that has it loaded first."""
        target = TARGET_HOST.get()
        hosts = [h for h in self.monitor.hosts_for(model) if target in (None, h.name)]
        warm = set(h.name for h in self.monitor.warm_hosts(model))
        if hosts:
            return min(hosts, key=lambda h: (h.kind != "ollama", h.name not in warm))
        if target is not None:
            if self.monitor.serves(target, model):
                raise BackendUnavailable(f"the engine host '{target}' is down (GET /api/v1/engines)")
            raise ModelNotFound(f"model {model!r} not found on the engine host '{target}'")
        if any(self.monitor.serves(h.name, model) for h in self.monitor.hosts):
            raise BackendUnavailable(f"every engine host that serves {model!r} is down")
        raise ModelNotFound(f"model {model!r} not found on any engine host")

    def _client(self, host: Host) -> HostClient:
        return self.clients[host.name]

    # ------------------------------------------------------------------ EngineClient's interface

    async def request(self, method: str, path: str, body: JsonDict | None = None) -> bytes:
        if method == "GET" and path in ("/api/tags", "/api/ps"):
            return orjson.dumps(await self._merged(path))
        model = str(body.get("model") or "") if isinstance(body, dict) else ""
        if (method == "POST" and path in _MANAGED) or method == "DELETE":
            return await self._on_each(method, path, body)
        if method == "HEAD":  # a blob is there only when every ollama host has it
            answers = [await self._client(h).request(method, path, body) for h in self._up(kind="ollama")]
            return answers[0]
        if model and is_unload(path, body):
            return await self._unload(path, body or {})
        if model:
            host = self.host_for(model)
            if host.kind == "openai" and path == "/api/show":
                return orjson.dumps(_show_openai(model))
            if host.kind == "openai" and is_load(path, body):
                return orjson.dumps(loaded_answer(model))
            return await self._client(host).request(method, path, body)
        return await self._client(self._up(kind="ollama")[0]).request(method, path, body)

    async def request_json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        payload = await self.request(method, path, body)
        parsed = orjson.loads(payload) if payload else {}
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    async def count_tokens(self, model: str, body: JsonDict) -> int | None:
        return await self._client(self.host_for(model)).count_tokens(model, body)

    async def upload(self, path: str, chunks: AsyncIterator[bytes], length: int | None = None) -> int:
        hosts = self._up(kind="ollama")
        first = self._client(hosts[0])
        assert isinstance(first, EngineClient)
        if len(hosts) == 1:
            return await first.upload(path, chunks, length)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self._spool_dir) as spool:
            async for chunk in chunks:
                spool.write(chunk)  # a local file (the upload's own pace bounds it)
            size = spool.tell()
            status = 0
            for host in hosts:
                client = self._client(host)
                assert isinstance(client, EngineClient)
                spool.seek(0)
                status = await client.upload(path, _read(spool), size)
        return status

    @asynccontextmanager
    async def stream(self, path: str, body: JsonDict) -> AsyncIterator[AsyncIterator[bytes]]:
        if path == "/api/pull":
            yield self._pull_each(body)
            return
        async with self._client(self.host_for(str(body.get("model") or ""))).stream(path, body) as lines:
            yield lines

    # ------------------------------------------------------------------ merged and broadcast calls

    async def _merged(self, path: str) -> JsonDict:
        """Every up host's list, asked at once, each within the probe timeout (a host that fails or lags is left
        out: the others still answer); each model once, with the hosts that have it."""
        hosts = [h for h in self._up() if path != "/api/ps" or h.kind == "ollama"]
        lists = await asyncio.gather(*(self._listed(host, path) for host in hosts))
        merged: dict[str, JsonDict] = {}
        for host, listed in zip(hosts, lists, strict=True):
            for entry in listed:
                if not isinstance(entry, dict) or not entry.get("name"):
                    continue
                name = canonical_model(str(entry["name"]))
                if host.models is not None and name not in host.models:
                    continue
                kept = merged.setdefault(name, {**entry, "hosts": []})
                kept["hosts"].append(host.name)
        return {"models": list(merged.values())}

    async def _listed(self, host: Host, path: str) -> list[Any]:
        if host.kind == "openai" and host.models is not None:  # listed under the names clients use
            return [{"name": name, "model": name} for name in host.models]
        try:
            async with asyncio.timeout(self.list_timeout):
                listed = await self._client(host).request_json("GET", path)
        except (SharedOllamaError, TimeoutError):
            return []
        models = listed.get("models")
        return models if isinstance(models, list) else []

    async def _on_each(self, method: str, path: str, body: JsonDict | None) -> bytes:
        """The call on every ``ollama`` host that is up; the first answer, or the first error once all ran."""
        answers: list[bytes] = []
        failure: Exception | None = None
        for host in self._up(kind="ollama"):
            try:
                answers.append(await self._client(host).request(method, path, body))
            except ModelNotFound as exc:  # deleting what one host does not have is not a failure
                if method != "DELETE":
                    failure = failure or exc
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        if not answers:
            raise ModelNotFound(f"model {(body or {}).get('model')!r} not found on any engine host")
        return answers[0]

    async def _unload(self, path: str, body: JsonDict) -> bytes:
        """Every ``ollama`` host serving the model unloads it (an ``openai`` host keeps what it serves)."""
        model = str(body["model"])
        target = TARGET_HOST.get()
        hosts = [h for h in self.monitor.hosts_for(model) if h.kind == "ollama" and target in (None, h.name)]
        answers = [await self._client(h).request("POST", path, body) for h in hosts]
        return answers[0] if answers else orjson.dumps({**loaded_answer(model), "done_reason": "unload"})

    async def _pull_each(self, body: JsonDict) -> AsyncIterator[bytes]:
        """Each ``ollama`` host's pull progress in turn; every host's lines but the last host's final
        ``success`` (so a client sees one), and the first error line ends it."""
        hosts = self._up(kind="ollama")
        for index, host in enumerate(hosts):
            async with self._client(host).stream("/api/pull", body) as lines:
                async for line in lines:
                    if b'"error"' in line:
                        yield line
                        return
                    if index < len(hosts) - 1 and b'"success"' in line:
                        continue
                    yield line


def is_load(path: str, body: JsonDict | None) -> bool:
    """Whether ``body`` only asks for its model to be loaded (nothing to answer)."""
    if path not in ("/api/generate", "/api/chat", "/api/embed") or not isinstance(body, dict):
        return False
    return not body.get("prompt") and not body.get("messages") and not body.get("input")


def loaded_answer(model: str) -> JsonDict:
    """Ollama's answer to a load request, for a host that serves its models without loading them on request."""
    return {"model": model, "created_at": "1970-01-01T00:00:00Z", "response": "", "done": True, "done_reason": "load"}


def _show_openai(model: str) -> JsonDict:
    """``/api/show`` of a model only an OpenAI-compatible host serves: nothing is known of it, its capabilities
    included (so images are sent, as data URIs, and the host itself says whether the model sees)."""
    return {"modelfile": "", "parameters": "", "template": "", "details": {}, "model_info": {}}


def is_unload(path: str, body: JsonDict | None) -> bool:
    """Whether ``body`` asks Ollama to unload its model: ``keep_alive`` 0 with nothing to answer."""
    if path not in ("/api/generate", "/api/chat", "/api/embed") or not isinstance(body, dict):
        return False
    empty = not body.get("prompt") and not body.get("messages") and not body.get("input")
    return empty and body.get("keep_alive") in (0, "0", "0s", "0m")


async def _read(spool: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = spool.read(_SPOOL_CHUNK)
        if not chunk:
            return
        yield chunk
