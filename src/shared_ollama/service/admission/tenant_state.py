"""The tenants in force, computed from the configuration and the admin API's kept changes (pure: no I/O).

The configuration (file and environment) gives one spec per tenant (``merge_config``); the snapshot
(``tenant_db.Snapshot``) puts the API's specs on top, removes the tenants it deleted and the keys it revoked,
and adds the keys it made (``effective``). Keys are known by their SHA-256 digest; their public id is derived
from it (``key_id``), so a configured key has the same id on every replica.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.admission.tenant_db import KeyRecord, Snapshot
from shared_ollama.service.admission.tenants import Role, TenantSpec

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_id(digest: bytes) -> str:
    """A key's public id: derived from its digest, so a configured key has the same id on every replica."""
    return hashlib.sha256(b"shared-ollama key id:" + digest).hexdigest()[:12]


def key_prefix(key: str) -> str:
    """What a listing shows of a key: at most a quarter of it, at most 10 characters."""
    return key[: min(10, len(key) // 4)]


def stored(spec: TenantSpec) -> JsonDict:
    """A spec as the store keeps it: its whole JSON (fields added later included), without keys."""
    return spec.model_dump(mode="json", exclude={"keys"})


def _deep_update(target: JsonDict, update: Mapping[str, Any]) -> None:
    for name, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(name), dict):
            _deep_update(target[name], value)
        else:
            target[name] = value


def merge_patch(target: JsonDict, patch: Mapping[str, Any]) -> JsonDict:
    """RFC 7386 JSON merge patch: objects merge, ``null`` removes (back to the default), anything else replaces."""
    result = dict(target)
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif isinstance(value, Mapping) and isinstance(result.get(name), dict):
            result[name] = merge_patch(result[name], value)
        else:
            result[name] = value
    return result


def merge_config(specs: Iterable[TenantSpec]) -> dict[str, TenantSpec]:
    """One spec per configured tenant: what a name's specs set, later ones winning, admin if any is, keys joined."""
    grouped: dict[str, list[TenantSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.name, []).append(spec)
    merged: dict[str, TenantSpec] = {}
    for name, group in grouped.items():
        if len(group) == 1:
            merged[name] = group[0]
            continue
        data: JsonDict = {}
        keys: list[str] = []
        for spec in group:
            _deep_update(data, spec.model_dump(mode="json", exclude_unset=True, exclude={"keys"}))
            keys += [key for key in spec.keys if key not in keys]
        admin = any(spec.role is Role.ADMIN for spec in group)
        data.update(role=Role.ADMIN if admin else group[0].role, keys=keys)
        merged[name] = TenantSpec.model_validate(data)
    return merged


def validated(data: Mapping[str, Any]) -> TenantSpec:
    """A tenant spec from an API body: ``keys`` are made by their own endpoint; a bad field is a 400 naming it."""
    if "keys" in data:
        raise InvalidRequest(
            "'keys' cannot be set here: POST /api/v1/admin/tenants/{name}/keys makes one", param="keys"
        )
    try:
        return TenantSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = ".".join(str(part) for part in errors[0]["loc"]) if errors else ""
        parts = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors[:5]]
        raise InvalidRequest("invalid tenant: " + "; ".join(parts), param=first or None) from None


@dataclass(frozen=True, slots=True)
class Effective:
    """The tenants in force: the configuration with the snapshot on top."""

    specs: Mapping[str, TenantSpec]
    """One spec per tenant; its ``keys`` are its configured keys still in force."""
    digests: Mapping[bytes, str]
    """Keys the API made -> their tenant."""
    from_api: frozenset[str]

    @property
    def keyed(self) -> bool:
        return bool(self.digests) or any(spec.keys for spec in self.specs.values())

    @property
    def admin_keyed(self) -> bool:
        admins = {name for name, spec in self.specs.items() if spec.role is Role.ADMIN}
        return any(self.specs[name].keys for name in admins) or any(t in admins for t in self.digests.values())


def effective(config: Mapping[str, TenantSpec], snapshot: Snapshot) -> Effective:
    revoked = {bytes.fromhex(r.digest) for r in snapshot.keys.values() if r.revoked}
    specs: dict[str, TenantSpec] = {}
    from_api: set[str] = set()
    for name in sorted(set(config) | set(snapshot.tenants)):
        base = config.get(name)
        keys = [key for key in base.keys if digest_of(key) not in revoked] if base is not None else []
        if name in snapshot.tenants:
            data = snapshot.tenants[name]
            if data is None:
                continue  # deleted through the API
            try:
                specs[name] = TenantSpec.model_validate({**data, "name": name, "keys": keys})
                from_api.add(name)
                continue
            except ValidationError as exc:
                log.warning("tenants: the stored spec of '%s' is no longer valid, ignored: %s", name, exc)
        if base is not None:
            specs[name] = base.model_copy(update={"keys": keys})
    digests = {bytes.fromhex(r.digest): r.tenant for r in snapshot.keys.values() if not r.revoked and r.tenant in specs}
    return Effective(specs, digests, frozenset(from_api))


def revoked_record(tenant: str, key: str) -> KeyRecord:
    digest = digest_of(key)
    return KeyRecord(key_id(digest), tenant, digest.hex(), key_prefix(key), time.time(), revoked=True)
