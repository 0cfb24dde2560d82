"""What the models config says once a profile is chosen: the limits in force (slots, models kept loaded, idle
timeout) and, per model, its aliases, idle timeout and pinned load-time options. Built completely at start-up
from the selection (None: no models config, the settings alone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.models.profiles import Selection, model_output_cap, model_settings
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """The limits in force: a setting given explicitly wins, then the profile's ``limits``, then the default."""

    slots: int
    """Requests the gateway sends to the engine at once."""
    max_loaded_models: int
    """Models kept loaded at once: the scheduler plans for it, the memory manager unloads beyond it."""
    idle_unload_seconds: float
    source: dict[str, str]
    """``setting``, ``profile`` or ``default`` per limit."""


def limits_in_force(settings: Settings, selection: Selection | None, *, engine_parallel: int | None) -> ModelLimits:
    """``engine_parallel``: the parallel slots of an engine this gateway started itself (its profile value is
    capped there: more slots than the engine has would only queue inside the engine, outside the fair queue)."""
    profile = selection.profile.limits if selection is not None else None
    given = settings.model_fields_set
    source: dict[str, str] = {}

    def pick(name: str, explicit: bool, setting: Any, from_profile: Any) -> Any:
        if explicit or from_profile is None:
            source[name] = "setting" if explicit else "default"
            return setting
        source[name] = "profile"
        return from_profile

    slots = pick(
        "slots",
        settings.engine_slots > 0 or "engine_num_parallel" in given,
        settings.slots,
        profile.num_parallel if profile else None,
    )
    if engine_parallel is not None:
        slots = min(slots, engine_parallel)
    loaded = pick(
        "max_loaded_models",
        settings.warm_models > 0 or "engine_max_loaded_models" in given,
        settings.scheduling_capacity,
        profile.max_loaded_models if profile else None,
    )
    idle = pick(
        "idle_unload_seconds",
        "idle_unload_seconds" in given,
        settings.idle_unload_seconds,
        profile.idle_unload_seconds if profile else None,
    )
    return ModelLimits(int(slots), int(loaded), float(idle), source)


class ModelPolicy:
    def __init__(self, selection: Selection | None, limits: ModelLimits) -> None:
        self.selection = selection
        self.limits = limits
        config = selection.config if selection is not None else None
        # Every profile's aliases, and each configured model's settings by canonical name, read once: every
        # request asks for them.
        self._aliases = frozenset(a for p in config.profiles for a in p.aliases) if config is not None else frozenset()
        self._models: dict[str, tuple[float | None, JsonDict, int | None]] = {}
        if config is not None:
            for name in config.model_settings:
                key = canonical_model(name)
                if key not in self._models:  # of two names for one model, the first is in force
                    idle, pinned = model_settings(config, name)
                    self._models[key] = (idle, pinned, model_output_cap(config, name))

    def resolve_alias(self, name: str) -> str:
        """An alias such as ``default-text`` as the active profile maps it; other names unchanged."""
        if self.selection is None or name not in self._aliases:
            return name
        return self.selection.resolve(name)

    def idle_timeout(self, model: str) -> float:
        entry = self._models.get(canonical_model(model))
        if entry is not None and entry[0] is not None:
            return entry[0]
        return self.limits.idle_unload_seconds

    def pinned(self, model: str) -> JsonDict:
        """The load-time options the models config pins for ``model`` (a dict of the caller's own)."""
        entry = self._models.get(canonical_model(model))
        return dict(entry[1]) if entry is not None else {}

    def default_output(self, model: str) -> int | None:
        """The output cap the models config sets for ``model`` (None: not set)."""
        entry = self._models.get(canonical_model(model))
        return entry[2] if entry is not None else None
