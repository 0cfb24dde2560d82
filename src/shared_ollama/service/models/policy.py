"""What the models config says about one model, once a profile is chosen: its aliases, idle timeout and pinned
load-time options. Built completely at start-up from the selection (None: no models config, global defaults)."""

from __future__ import annotations

from typing import Any

from shared_ollama.service.models.profiles import Selection, model_settings

JsonDict = dict[str, Any]


class ModelPolicy:
    def __init__(self, selection: Selection | None, default_idle_timeout: float) -> None:
        self.selection = selection
        self.default_idle_timeout = default_idle_timeout

    def resolve_alias(self, name: str) -> str:
        """An alias such as ``default-text`` as the active profile maps it; other names unchanged."""
        return self.selection.resolve(name) if self.selection is not None else name

    def idle_timeout(self, model: str) -> float:
        if self.selection is not None:
            timeout, _ = model_settings(self.selection.config, model)
            if timeout is not None:
                return timeout
        return self.default_idle_timeout

    def pinned(self, model: str) -> JsonDict:
        """The load-time options the models config pins for ``model``."""
        return model_settings(self.selection.config, model)[1] if self.selection is not None else {}
