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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared_ollama.errors import Forbidden, InvalidRequest, Unauthorized
from shared_ollama.service.admission.tenant_policy import PolicyOverrides, TenantPolicy, resolve_policy
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
    requests_per_minute: int | None = Field(default=None, ge=0)
    """Quotas (``service/quotas``): 0 lifts a limit the settings set for every tenant."""
    tokens_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    max_inflight_per_user: int | None = Field(default=None, ge=0)
    """In-flight requests per end user inside the tenant (0: no per-user cap)."""


class TenantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME.pattern)
    role: Role = Role.USER
    keys: list[str] = Field(default_factory=list)
    limits: LimitOverrides = Field(default_factory=LimitOverrides)
    cache: Literal["off", "exact", "semantic"] | None = None
    """The tenant's default cache mode (unset: only deterministic requests use the exact cache)."""
    policy: PolicyOverrides = Field(default_factory=PolicyOverrides)
    """What the tenant's requests may do to the shared engine (``tenant_policy.py``)."""


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
    requests_per_minute: int | None = None
    """Quotas (``service/quotas``); None or 0: unlimited."""
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    max_inflight_per_user: int = 0
    """In-flight requests per end user inside the tenant, of any kind (0: none)."""

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
    policy: TenantPolicy = field(default_factory=TenantPolicy)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{action} needs an admin key; tenant '{self.name}' is a {self.role.value}")

    def require_model_management(self, action: str) -> None:
        """Creating, copying, pulling and deleting models: admins, and tenants whose policy allows it."""
        if not (self.is_admin or self.policy.manage_models):
            raise Forbidden(
                f"{action} needs an admin key or a tenant policy with manage_models; tenant '{self.name}' has neither"
            )


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
        self.replace(self.specs)

    def replace(self, specs: Sequence[TenantSpec], digests: Mapping[bytes, str] | None = None) -> None:
        """Index ``specs`` and the keys known only by their SHA-256 digests (``digest -> tenant``), then swap the
        index in with one assignment: a request resolves against the old index or the new one, never a mix, and
        keeps the ``Tenant`` it resolved. Specs are merged by name (a tenant in the file and the environment keeps
        the file's limits). A key given to two tenants, or to an unknown one, raises ``ValueError`` and the index
        in force stays."""
        roles: dict[str, Role] = {}
        caches: dict[str, str] = {}
        overrides: dict[str, dict[str, Any]] = {}
        policies: dict[str, dict[str, Any]] = {}
        owners: dict[bytes, str] = {}
        for spec in specs:
            if spec.role is Role.ADMIN or spec.name not in roles:
                roles[spec.name] = spec.role
            overrides.setdefault(spec.name, {}).update(spec.limits.model_dump(exclude_none=True))
            policies.setdefault(spec.name, {}).update(spec.policy.model_dump(exclude_unset=True))
            if spec.cache is not None:
                caches[spec.name] = spec.cache
            for key in spec.keys:
                digest = _digest(key)
                if owners.setdefault(digest, spec.name) != spec.name:
                    raise ValueError(f"one API key is given to two tenants: '{owners[digest]}' and '{spec.name}'")
        for digest, name in (digests or {}).items():
            if name not in roles:
                raise ValueError(f"a key is given to an unknown tenant '{name}'")
            if owners.setdefault(digest, name) != name:
                raise ValueError(f"one API key is given to two tenants: '{owners[digest]}' and '{name}'")
        keyed = bool(owners)
        by_name = {
            name: Tenant(
                name,
                roles[name],
                _limits(self.settings, LimitOverrides(**overrides[name])),
                caches.get(name),
                resolve_policy(
                    self.settings, PolicyOverrides(**policies[name]), admin_key=keyed and roles[name] is Role.ADMIN
                ),
            )
            for name in roles
        }
        default_limits = _limits(self.settings, LimitOverrides())
        default_policy = resolve_policy(self.settings, PolicyOverrides(), admin_key=False)
        self.specs = list(specs)
        self._by_name, self._keys, self._default_limits, self._default_policy = (
            by_name,
            list(owners.items()),
            default_limits,
            default_policy,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Tenants:
        return cls(settings, load_specs(settings))

    @property
    def auth_enabled(self) -> bool:
        return bool(self._keys)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Tenant:
        return self._by_name.get(name) or Tenant(name, Role.USER, self._default_limits, policy=self._default_policy)

    def authenticate(self, headers: Mapping[str, str]) -> Tenant:
        if not self.auth_enabled:
            name = headers.get(self.settings.project_header.lower(), "").strip() or DEFAULT_TENANT
            if not _NAME.match(name):
                raise InvalidRequest(
                    f"{self.settings.project_header} must be 1-64 letters, digits, '.', '_' or '-'",
                    param=self.settings.project_header,
                )
            # Auth off: mutating operations are open to everyone (the operator chose a trusted setting), but the
            # engine-level policy applies: no tenant has a key to be exempted by.
            known = self._by_name.get(name)
            if known is None:
                return Tenant(name, Role.ADMIN, self._default_limits, None, self._default_policy)
            return Tenant(name, Role.ADMIN, known.limits, known.cache, known.policy)
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
