"""A tenant's engine-level policy: what its requests may do to the engine that other tenants share.

The tenants file's ``policy`` section overrides the service settings per tenant (``PolicyOverrides``); the
resolved values travel with the tenant (``TenantPolicy``). What the gateway does with them is in
``engine_policy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_ollama.protocol.names import canonical_model
from shared_ollama.settings import Settings


class PolicyOverrides(BaseModel):
    """Per-tenant overrides of the engine-level policy settings (unset = the service setting)."""

    model_config = ConfigDict(extra="forbid")
    max_keep_alive_seconds: float | None = Field(default=None, ge=0)
    """Longest ``keep_alive`` the tenant may ask; 0: the model's idle timeout."""
    default_max_output_tokens: int | None = Field(default=None, ge=1)
    """Output cap for the tenant's generations that set none (wins over the model's and the service's)."""
    max_output_tokens: int | None = Field(default=None, ge=0)
    """The tenant's output ceiling; 0: none."""
    output_over_ceiling: Literal["clamp", "refuse"] | None = None
    models: list[str] | None = None
    """Allow-list of model names or patterns (``qwen3:*``); unset: every model."""
    deny_models: list[str] = Field(default_factory=list)
    """Models (or patterns) the tenant may not use, even when the allow-list matches."""
    manage_models: bool = False
    """May create, copy, pull and delete models without an admin key."""
    load_variants: bool = False
    """May send load-time options (``num_ctx``, ``num_batch``, ...) that make the engine load another variant."""
    exempt: bool | None = None
    """Exempt from the engine-level policy (unset: admin keys are when ``policy_exempt_admin``)."""
    openwebui_users: bool = False
    """Take the end user from Open WebUI's ``X-OpenWebUI-User-Id`` header (fair sharing among its users)."""


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """The resolved policy of one tenant (the defaults are the service settings' defaults)."""

    max_keep_alive_seconds: float = 0.0
    default_max_output_tokens: int | None = None
    """The tenant's own default output cap; None: the model's, else the service's."""
    max_output_tokens: int = 0
    output_over_ceiling: str = "clamp"
    models: tuple[str, ...] | None = None
    deny_models: tuple[str, ...] = ()
    manage_models: bool = False
    load_variants: bool = False
    exempt: bool = False
    """True: keep_alive, load-time options, the ceiling and the model lists are not applied."""
    openwebui_users: bool = False

    def allows(self, model: str) -> bool:
        """Whether the tenant may use ``model`` (names compared as the engine does: ``x`` is ``x:latest``)."""
        if self.exempt:
            return True
        name = canonical_model(model)

        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatchcase(name, canonical_model(p)) or fnmatchcase(name, p) for p in patterns)

        if matches(self.deny_models):
            return False
        return self.models is None or matches(self.models)


def resolve_policy(settings: Settings, overrides: PolicyOverrides, *, admin_key: bool) -> TenantPolicy:
    """``admin_key``: the tenant is an admin that authenticates with a key (auth on)."""
    exempt = overrides.exempt if overrides.exempt is not None else (admin_key and settings.policy_exempt_admin)
    ceiling = overrides.max_output_tokens
    return TenantPolicy(
        max_keep_alive_seconds=(
            overrides.max_keep_alive_seconds
            if overrides.max_keep_alive_seconds is not None
            else settings.max_keep_alive_seconds
        ),
        default_max_output_tokens=overrides.default_max_output_tokens,
        max_output_tokens=ceiling if ceiling is not None else settings.max_output_tokens,
        output_over_ceiling=overrides.output_over_ceiling or settings.output_over_ceiling,
        models=tuple(overrides.models) if overrides.models is not None else None,
        deny_models=tuple(overrides.deny_models),
        manage_models=overrides.manage_models,
        load_variants=overrides.load_variants,
        exempt=bool(exempt),
        openwebui_users=overrides.openwebui_users,
    )
