"""Tenants (projects), their API keys, roles and limits.

Tenants come from a YAML file (``config/tenants.yaml`` or ``SHARED_OLLAMA_TENANTS_FILE``) and from
``SHARED_OLLAMA_API_KEYS`` (``tenant:key[:role],...``). With at least one key configured, auth is on: every
request names its key as ``Authorization: Bearer <key>`` or ``X-API-Key``. With none, auth is off and the
tenant is the project header's value (else ``default``); the file can still set per-tenant limits.

Keys are kept only as SHA-256 digests and compared in constant time; they are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared_ollama.errors import Forbidden, InvalidRequest, Unauthorized
from shared_ollama.settings import Settings

DEFAULT_TENANT = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class LimitOverrides(BaseModel):
    """Per-tenant overrides of the admission settings (unset = the global setting)."""

    model_config = ConfigDict(extra="forbid")
    max_inflight_text: int | None = Field(default=None, ge=1)
    max_inflight_vision: int | None = Field(default=None, ge=1)
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    queue_timeout_text: float | None = Field(default=None, gt=0)
    queue_timeout_vision: float | None = Field(default=None, gt=0)


class TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME.pattern)
    role: Role = Role.USER
    keys: list[str] = Field(default_factory=list)
    limits: LimitOverrides = Field(default_factory=LimitOverrides)
    cache: Literal["off", "exact", "semantic"] | None = None
    """The tenant's default cache mode (unset: only deterministic requests use the exact cache)."""


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[TenantSpec] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    max_inflight_text: int
    max_inflight_vision: int
    max_prompt_tokens: int
    queue_timeout_text: float
    queue_timeout_vision: float

    def cap(self, kind: str) -> int:
        return self.max_inflight_vision if kind == "vision" else self.max_inflight_text

    def queue_timeout(self, kind: str) -> float:
        return self.queue_timeout_vision if kind == "vision" else self.queue_timeout_text


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    role: Role
    limits: Limits
    cache: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{action} needs an admin key; tenant '{self.name}' is a {self.role.value}")


def _limits(settings: Settings, overrides: LimitOverrides) -> Limits:
    values = {name: getattr(settings, name) for name in LimitOverrides.model_fields}
    values.update(overrides.model_dump(exclude_none=True))
    return Limits(**values)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _from_env(spec: str) -> list[TenantSpec]:
    specs: list[TenantSpec] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError("SHARED_OLLAMA_API_KEYS entries must look like tenant:key or tenant:key:role")
        role = Role(parts[2]) if len(parts) == 3 else Role.USER
        specs.append(TenantSpec(name=parts[0], role=role, keys=[parts[1]]))
    return specs


def load_specs(settings: Settings) -> list[TenantSpec]:
    """Tenants from the file (if any) and the environment; a bad file is an error at start-up, naming it."""
    path = settings.tenants_file or Path("config/tenants.yaml")
    specs: list[TenantSpec] = []
    if settings.tenants_file is not None or path.is_file():
        try:
            raw: Any = yaml.safe_load(path.read_text()) or {}
            specs = TenantsFile.model_validate(raw).tenants
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"invalid tenants file {path}: {exc}") from exc
    try:
        specs += _from_env(settings.api_keys)
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"invalid SHARED_OLLAMA_API_KEYS: {exc}") from exc
    return specs


@dataclass
class Tenants:
    """Resolves a request's headers to its tenant."""

    settings: Settings = field(repr=False)
    specs: list[TenantSpec] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        """Merge specs by name (a tenant in the file and the environment keeps the file's limits), index keys."""
        roles: dict[str, Role] = {}
        caches: dict[str, str] = {}
        overrides: dict[str, dict[str, Any]] = {}
        owners: dict[bytes, str] = {}
        for spec in self.specs:
            if spec.role is Role.ADMIN or spec.name not in roles:
                roles[spec.name] = spec.role
            overrides.setdefault(spec.name, {}).update(spec.limits.model_dump(exclude_none=True))
            if spec.cache is not None:
                caches[spec.name] = spec.cache
            for key in spec.keys:
                digest = _digest(key)
                if owners.setdefault(digest, spec.name) != spec.name:
                    raise ValueError(f"one API key is given to two tenants: '{owners[digest]}' and '{spec.name}'")
        self._by_name = {
            name: Tenant(name, roles[name], _limits(self.settings, LimitOverrides(**overrides[name])), caches.get(name))
            for name in roles
        }
        self._keys = list(owners.items())
        self._default_limits = _limits(self.settings, LimitOverrides())

    @classmethod
    def from_settings(cls, settings: Settings) -> Tenants:
        return cls(settings, load_specs(settings))

    @property
    def auth_enabled(self) -> bool:
        return bool(self._keys)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Tenant:
        return self._by_name.get(name) or Tenant(name, Role.USER, self._default_limits)

    def authenticate(self, headers: Mapping[str, str]) -> Tenant:
        if not self.auth_enabled:
            name = headers.get(self.settings.project_header.lower(), "").strip() or DEFAULT_TENANT
            if not _NAME.match(name):
                raise InvalidRequest(
                    f"{self.settings.project_header} must be 1-64 letters, digits, '.', '_' or '-'",
                    param=self.settings.project_header,
                )
            # Auth off: mutating operations are open to everyone (the operator chose a trusted setting).
            known = self._by_name.get(name)
            return Tenant(name, Role.ADMIN, known.limits if known else self._default_limits, known and known.cache)
        key = _presented_key(headers)
        if key is None:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = _digest(key)
        match: str | None = None
        for known, name in self._keys:  # every key is compared, so the time does not depend on which matched
            if hmac.compare_digest(known, digest):
                match = name
        if match is None:
            raise Unauthorized("invalid API key")
        return self._by_name[match]


def _presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None
