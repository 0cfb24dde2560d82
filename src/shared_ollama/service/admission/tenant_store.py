"""Tenants and keys managed live: the admin API's changes, kept, shared by the replicas, and applied at once.

The configuration (``config/tenants.yaml`` or ``SHARED_OLLAMA_TENANTS_FILE``, and ``SHARED_OLLAMA_API_KEYS``) is
the bootstrap source; it is never rewritten. What the API changes is kept as a ``Snapshot`` (``tenant_db``) in
``<data_dir>/tenants.sqlite3`` and, with ``SHARED_OLLAMA_REDIS_URL``, in Redis, which the replicas share. The
tenants in force are the configuration with the snapshot on top: a tenant the API created or changed has the
API's spec, one it deleted is gone (its configured keys revoked with it), a key it made (kept as a digest only) or
revoked is added or removed. Every change swaps ``Tenants``' index at once (``Tenants.replace``).

With Redis, every request first compares the shared version with the one in force (one ``GET``) and reloads on a
difference, so a key deleted on one replica is refused by every replica from the next request on. SIGHUP re-reads
the configuration; a bad file is logged and the tenants in force stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from shared_ollama.errors import BackendUnavailable, Conflict, InvalidRequest, NotFound
from shared_ollama.service.admission.tenant_db import KeyRecord, RedisTenantDB, Snapshot, SqliteTenantDB
from shared_ollama.service.admission.tenant_state import (
    Effective,
    digest_of,
    effective,
    key_id,
    key_prefix,
    merge_config,
    merge_patch,
    revoked_record,
    stored,
    validated,
)
from shared_ollama.service.admission.tenants import Tenants, TenantSpec, load_specs
from shared_ollama.service.observability.audit import AuditLog
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]
Mutation = Callable[[Snapshot, Effective], Snapshot]

KEY_MARK = "so-"
"""Keys the API makes start with this, then 43 random URL-safe characters (256 bits)."""
ATTEMPTS = 5
"""Tries of a change that another replica's change keeps overtaking."""
_SHARED_RETRY_AFTER = 2.0
SHARED_BACKOFF = 1.0
"""Seconds requests skip the version check after Redis failed to answer one (they use this replica's copy)."""
SYNC_TIMEOUT = 0.5
"""Seconds the per-request version check may take; past it the replica uses its copy (and retries after the backoff)."""


class TenantStore:
    """The admin API's tenants and keys: kept in SQLite (and Redis), applied to ``tenants`` at once, audited."""

    def __init__(
        self,
        settings: Settings,
        tenants: Tenants,
        audit: AuditLog,
        *,
        on_change: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.tenants = tenants
        self.audit = audit
        self._on_change = on_change
        self._local = SqliteTenantDB(settings.data_dir / "tenants.sqlite3")
        self._shared = RedisTenantDB(settings.redis_url) if settings.redis_url else None
        self._config = merge_config(tenants.specs)
        self._snapshot = Snapshot()
        self._effective = effective(self._config, self._snapshot)
        self._lock = asyncio.Lock()
        self._shared_down = False
        self._next_check = 0.0
        self._reloads: set[asyncio.Task[bool]] = set()

    @property
    def shared(self) -> bool:
        return self._shared is not None

    # --- lifecycle

    async def start(self) -> None:
        """Load the kept changes (Redis's when it holds some, else seeding it from SQLite) and apply them."""
        snapshot = await self._local.load()
        if self._shared is not None:
            try:
                shared = await self._shared.load()
                if shared.version == 0 and snapshot.version > 0:  # a fresh Redis: seed it (unless a replica did)
                    await self._shared.save(snapshot, 0)
                    shared = await self._shared.load()
                if shared.version != snapshot.version:
                    await self._mirror(shared)
                snapshot = shared
            except (RedisError, OSError) as exc:
                self._note_shared_down(exc)
        self._apply(snapshot)

    async def close(self) -> None:
        for task in list(self._reloads):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._shared is not None:
            await self._shared.close()

    def watch_sighup(self) -> Callable[[], None]:
        """Reload the configuration on SIGHUP (main thread only); returns what removes the handler."""
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            task = loop.create_task(self.reload_config(), name="tenants-reload")
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

        try:
            loop.add_signal_handler(signal.SIGHUP, on_signal)
        except (ValueError, RuntimeError, NotImplementedError):
            log.debug("tenants: no SIGHUP handler outside the main thread")
            return lambda: None
        return lambda: loop.remove_signal_handler(signal.SIGHUP)

    # --- keeping up to date

    def _apply(self, snapshot: Snapshot, config: Mapping[str, TenantSpec] | None = None) -> None:
        config = self._config if config is None else dict(config)
        result = effective(config, snapshot)
        self.tenants.replace(list(result.specs.values()), result.digests)  # raises before changing anything
        self._snapshot, self._effective, self._config = snapshot, result, dict(config)
        if self._on_change is not None:
            self._on_change(sorted(result.specs))

    def _note_shared_down(self, exc: BaseException) -> None:
        if not self._shared_down:
            log.warning("tenants: shared state (Redis) unreachable, using this replica's copy: %s", exc)
        self._shared_down = True
        self._next_check = time.monotonic() + SHARED_BACKOFF

    async def _refresh(self) -> Snapshot:
        """The latest snapshot, applied (under the lock): Redis's (kept in SQLite too), else SQLite's."""
        if self._shared is None:
            latest = await self._local.load()
        else:
            latest = await self._shared.load()
            if latest.version == 0 and self._snapshot.version > 0:  # Redis lost its data (restarted): seed it again
                await self._shared.save(self._snapshot, 0)
                latest = await self._shared.load()
            if self._shared_down:
                log.info("tenants: shared state (Redis) reachable again")
                self._shared_down = False
        if latest.version != self._snapshot.version:
            if self._shared is not None:
                await self._mirror(latest)
            self._apply(latest)
        return self._snapshot

    async def _mirror(self, snapshot: Snapshot) -> None:
        try:
            await self._local.save(snapshot, None)
        except Exception:
            log.warning("tenants: could not keep the shared tenants in SQLite", exc_info=True)

    async def sync(self) -> None:
        """Before a request, with Redis: reload when another replica changed the tenants (one GET otherwise)."""
        if self._shared is None or (self._shared_down and time.monotonic() < self._next_check):
            return
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):  # a hanging Redis must not hold every request for seconds
                version = await self._shared.version()
            if version == self._snapshot.version and not self._shared_down:
                return
            async with self._lock:
                await self._refresh()
        except (RedisError, OSError, TimeoutError) as exc:
            self._note_shared_down(exc)
        except ValueError as exc:
            log.error("tenants: the shared tenants cannot be applied, the ones in force stay: %s", exc)

    async def reload_config(self) -> bool:
        """Re-read the tenants file and the environment's keys (SIGHUP); a bad file is logged, nothing changes."""
        target = str(self.settings.tenants_file or "config/tenants.yaml")
        try:
            config = merge_config(load_specs(self.settings))
            async with self._lock:
                with contextlib.suppress(RedisError, OSError):
                    await self._refresh()
                self._apply(self._snapshot, config)
        except (ValueError, ValidationError) as exc:
            log.error("tenants: reload on SIGHUP failed, the tenants in force stay: %s", exc)
            await self._audit("SIGHUP", "config.reload", target, {"ok": False})
            return False
        detail = {"ok": True, "tenants": len(self._effective.specs)}
        await self._audit("SIGHUP", "config.reload", target, detail)
        return True

    # --- changes

    async def _change(self, mutate: Mutation) -> None:
        async with self._lock:
            for _ in range(ATTEMPTS):
                try:
                    current = await self._refresh()
                    new = replace(mutate(current, self._effective), version=current.version + 1)
                    self._check(new)
                    if self._shared is not None:
                        if not await self._shared.save(new, current.version):
                            continue  # another replica changed them first: redo on its version
                        await self._mirror(new)
                    elif not await self._local.save(new, current.version):
                        continue
                except RedisError as exc:
                    raise BackendUnavailable(
                        f"shared state (Redis) unreachable: {exc}", retry_after=_SHARED_RETRY_AFTER
                    ) from exc
                self._apply(new)
                return
        raise Conflict("the tenants kept changing while this change was made; try again")

    def _check(self, snapshot: Snapshot) -> None:
        result = effective(self._config, snapshot)
        if (self._effective.keyed or result.keyed) and not result.admin_keyed:
            raise Conflict(
                "this change would leave no admin key (and lock everyone out of the admin API, or turn auth off): "
                "give an admin tenant a key first"
            )
        try:
            Tenants(self.settings).replace(list(result.specs.values()), result.digests)
        except ValueError as exc:
            raise Conflict(str(exc)) from None

    async def _audit(self, actor: str, action: str, target: str, detail: JsonDict, request_id: str = "") -> None:
        """Log and audit a change already made (a failure to write the entry is logged; the change stands)."""
        log.info("tenants: %s %s by %s", action, target, actor)
        try:
            await self.audit.record(actor=actor, action=action, target=target, detail=detail, request_id=request_id)
        except Exception:
            log.exception("tenants: could not write the audit entry of %s %s by %s", action, target, actor)

    def _existing(self, result: Effective, name: str) -> TenantSpec:
        spec = result.specs.get(name)
        if spec is None:
            raise NotFound(f"no tenant '{name}'")
        return spec

    async def create(self, body: Mapping[str, Any], *, actor: str, request_id: str = "") -> JsonDict:
        spec = validated(body)

        def mutate(snapshot: Snapshot, result: Effective) -> Snapshot:
            if spec.name in result.specs:
                raise Conflict(f"tenant '{spec.name}' already exists", param="name")
            return replace(snapshot, tenants={**snapshot.tenants, spec.name: stored(spec)})

        await self._change(mutate)
        await self._audit(actor, "tenant.create", spec.name, stored(spec), request_id)
        return self.view(spec.name)

    async def patch(self, name: str, body: Mapping[str, Any], *, actor: str, request_id: str = "") -> JsonDict:
        if body.get("name", name) != name:
            raise InvalidRequest("a tenant cannot be renamed: create a new one", param="name")

        def mutate(snapshot: Snapshot, result: Effective) -> Snapshot:
            current = stored(self._existing(result, name))
            spec = validated({**merge_patch(current, body), "name": name})
            return replace(snapshot, tenants={**snapshot.tenants, name: stored(spec)})

        await self._change(mutate)
        await self._audit(actor, "tenant.update", name, dict(body), request_id)
        return self.view(name)

    async def delete(self, name: str, *, actor: str, request_id: str = "") -> None:
        def mutate(snapshot: Snapshot, result: Effective) -> Snapshot:
            spec = self._existing(result, name)
            tenants = dict(snapshot.tenants)
            keys = {i: r for i, r in snapshot.keys.items() if r.tenant != name or r.revoked}
            if name in self._config:  # the file still names it: remember the deletion, revoke its keys
                tenants[name] = None
                for key in spec.keys:
                    record = revoked_record(name, key)
                    keys[record.id] = record
            else:
                tenants.pop(name, None)
            return replace(snapshot, tenants=tenants, keys=keys)

        await self._change(mutate)
        await self._audit(actor, "tenant.delete", name, {}, request_id)

    async def add_key(self, name: str, *, actor: str, request_id: str = "") -> JsonDict:
        key = KEY_MARK + secrets.token_urlsafe(32)
        digest = digest_of(key)
        record = KeyRecord(key_id(digest), name, digest.hex(), key_prefix(key), time.time())

        def mutate(snapshot: Snapshot, result: Effective) -> Snapshot:
            self._existing(result, name)
            return replace(snapshot, keys={**snapshot.keys, record.id: record})

        await self._change(mutate)
        await self._audit(actor, "key.create", f"{name}/{record.id}", {"id": record.id}, request_id)
        return {"id": record.id, "key": key, "prefix": record.prefix, "tenant": name, "created_at": record.created_at}

    async def delete_key(self, name: str, key: str, *, actor: str, request_id: str = "") -> None:
        def mutate(snapshot: Snapshot, result: Effective) -> Snapshot:
            spec = self._existing(result, name)
            record = snapshot.keys.get(key)
            if record is not None and record.tenant == name and not record.revoked:
                return replace(snapshot, keys={i: r for i, r in snapshot.keys.items() if i != key})
            for configured in spec.keys:
                revoked = revoked_record(name, configured)
                if revoked.id == key:
                    return replace(snapshot, keys={**snapshot.keys, key: revoked})
            raise NotFound(f"tenant '{name}' has no key '{key}'")

        await self._change(mutate)
        await self._audit(actor, "key.delete", f"{name}/{key}", {"id": key}, request_id)

    # --- views

    def names(self) -> list[str]:
        return sorted(self._effective.specs)

    def view(self, name: str) -> JsonDict:
        """A tenant as the admin API shows it: its spec, where it comes from, its keys' ids and prefixes, and the
        limits in force."""
        spec = self._existing(self._effective, name)
        keys: list[JsonDict] = [
            {"id": key_id(digest_of(key)), "prefix": key_prefix(key), "source": "config"} for key in spec.keys
        ]
        keys += [
            {"id": r.id, "prefix": r.prefix, "source": "api", "created_at": r.created_at}
            for r in self._snapshot.keys.values()
            if r.tenant == name and not r.revoked
        ]
        return {
            **stored(spec),
            "source": "api" if name in self._effective.from_api else "config",
            "in_config": name in self._config,
            "keys": keys,
            "limits_in_force": asdict(self.tenants.get(name).limits),
        }
