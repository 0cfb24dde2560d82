"""The engine-level policy: no tenant's request can hurt the others through the engine they share.

Applied by the gateway to every native request body before the cache and admission (``EnginePolicy.apply``):

- the model must be on the tenant's allow-list and off its deny-list (403 ``forbidden`` naming it);
- ``keep_alive: 0`` ("I am done with it"), or any value shorter than the model's idle timeout, is ignored while
  another tenant used the model within that timeout;
  a negative (forever) or longer ``keep_alive`` is clamped to the tenant's maximum (default: the idle timeout);
- load-time options (``num_ctx``, ``num_batch``, ...) never make the engine load another variant of a model: a
  value the models config pins replaces the request's, others are dropped; a smaller ``num_ctx`` becomes the
  request's prompt bound instead;
- a generation that sets no ``num_predict`` gets the default output cap (tenant, then model, then service), and
  one above the tenant's ceiling is clamped or refused.

Admin keys are exempt (``policy_exempt_admin``) except for the default output cap, which is a default, not a
restriction. What was changed is said in the ``X-Shared-Ollama-Policy`` response header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared_ollama.errors import Forbidden, InvalidRequest
from shared_ollama.protocol.durations import keep_alive_seconds
from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.admission.tenants import Tenant
from shared_ollama.service.models.policy import ModelPolicy

JsonDict = dict[str, Any]
POLICY_HEADER = "X-Shared-Ollama-Policy"
PINNED_HEADER = "X-Shared-Ollama-Pinned-Options"
LOAD_TIME_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "use_mmap",
        "use_mlock",
        "low_vram",
        "numa",
        "f16_kv",
        "vocab_only",
        "logits_all",
    }
)
"""Options the engine reads when it loads a model: a different value makes it load the model again."""
_GENERATING = ("/api/chat", "/api/generate")


class ModelUsers:
    """When each tenant last used each model (in this process), for ``keep_alive: 0``. Entries older than the
    model's idle timeout are dropped as new uses are noted, so the map stays as small as the recent traffic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, dict[str, float]] = {}

    def touch(self, model: str, tenant: str, horizon: float) -> None:
        now = self._clock()
        users = self._last.setdefault(model, {})
        users[tenant] = now
        for name in [name for name, at in users.items() if now - at > horizon]:
            del users[name]

    def others_within(self, model: str, tenant: str, seconds: float) -> list[str]:
        """The other tenants that used ``model`` within the last ``seconds``."""
        now = self._clock()
        users = self._last.get(model, {})
        return sorted(name for name, at in users.items() if name != tenant and now - at <= seconds)


@dataclass(slots=True)
class Applied:
    """What the policy did to one request."""

    notes: list[str] = field(default_factory=list)
    """Changes to tell the client (the policy header)."""
    pinned: list[str] = field(default_factory=list)
    """Pinned load-time options that replaced the request's (the pinned-options header)."""
    prompt_limit: int | None = None
    """A bound on the prompt's tokens the request asked for (a ``num_ctx`` below the model's)."""


class EnginePolicy:
    def __init__(self, models: ModelPolicy, users: ModelUsers, *, engine_num_ctx: int, default_output: int) -> None:
        self.models = models
        self.users = users
        self.engine_num_ctx = engine_num_ctx
        """The context a model is loaded with when nothing pins another (the engine's default)."""
        self.default_output = default_output

    def used(self, model: str, tenant: str) -> None:
        """A tenant's request for ``model`` was admitted."""
        self.users.touch(canonical_model(model), tenant, self.models.idle_timeout(model))

    def apply(self, tenant: Tenant, path: str, body: JsonDict) -> Applied:
        applied = Applied()
        model = str(body["model"])
        policy = tenant.policy
        check_model(tenant, model)
        if not policy.exempt and "keep_alive" in body:
            self._keep_alive(tenant, model, body, applied)
        options = body.get("options")
        if not isinstance(options, dict):
            options = body["options"] = {}
        self._load_options(tenant, model, options, applied)
        if path in _GENERATING:
            self._output(tenant, model, options, applied)
        return applied

    def _keep_alive(self, tenant: Tenant, model: str, body: JsonDict, applied: Applied) -> None:
        value = body["keep_alive"]
        if value is None or value == "":
            return
        try:
            seconds = keep_alive_seconds(value, "0")
        except ValueError:
            raise InvalidRequest(f"keep_alive {value!r} is not a duration", param="keep_alive") from None
        idle = self.models.idle_timeout(model)
        if seconds is not None and seconds < idle:  # 0 unloads at once; "1ms" a moment later: the same to the others
            others = self.users.others_within(canonical_model(model), tenant.name, idle)
            if others:
                del body["keep_alive"]
                applied.notes.append(f"keep_alive={value} ignored: {len(others)} other tenant(s) use {model}")
            return
        limit = tenant.policy.max_keep_alive_seconds or idle
        if seconds is None or seconds > limit:
            body["keep_alive"] = _seconds(limit)
            applied.notes.append(f"keep_alive={value} clamped to {_seconds(limit)}")

    def _load_options(self, tenant: Tenant, model: str, options: JsonDict, applied: Applied) -> None:
        pinned = self.models.pinned(model)
        policy = tenant.policy
        if policy.exempt or policy.load_variants:  # may load a variant explicitly; pins fill in what is not asked
            for name, value in pinned.items():
                options.setdefault(name, value)
            return
        for name in sorted(LOAD_TIME_OPTIONS.intersection(options)):
            asked = options.pop(name)
            if name == "num_ctx":
                loaded = pinned.get("num_ctx", self.engine_num_ctx)
                if isinstance(asked, int) and not isinstance(asked, bool) and 0 < asked < loaded:
                    applied.prompt_limit = asked
                    applied.notes.append(f"num_ctx={asked} kept as the prompt's bound (the model has {loaded})")
            if name in pinned:
                if asked != pinned[name]:
                    applied.pinned.append(f"{name}={pinned[name]} (asked {asked})")
            elif applied.prompt_limit is None or name != "num_ctx":
                applied.notes.append(f"{name}={asked} ignored (a load-time option of a shared model)")
        options.update(pinned)

    def _output(self, tenant: Tenant, model: str, options: JsonDict, applied: Applied) -> None:
        policy = tenant.policy
        ceiling = 0 if policy.exempt else policy.max_output_tokens
        asked = options.get("num_predict")
        if asked is None:
            default = policy.default_max_output_tokens or self.models.default_output(model) or self.default_output
            if ceiling:
                default = min(default, ceiling)
            options["num_predict"] = default
            applied.notes.append(f"num_predict={default} (default)")
            return
        if not ceiling or (isinstance(asked, int) and 0 <= asked <= ceiling):
            return
        if policy.output_over_ceiling == "refuse":
            raise InvalidRequest(
                f"num_predict {asked} is above tenant '{tenant.name}''s output ceiling of {ceiling} tokens",
                param="num_predict",
            )
        options["num_predict"] = ceiling
        applied.notes.append(f"num_predict={asked} clamped to {ceiling}")


def check_model(tenant: Tenant, model: str) -> None:
    """A 403 naming ``model`` when the tenant's allow-list or deny-list keeps it from the model."""
    if not tenant.policy.allows(model):
        raise Forbidden(f"tenant '{tenant.name}' may not use model '{model}'", param="model")


def _seconds(value: float) -> str:
    return f"{value:g}s"
