"""Which models the engine holds, as ``/api/ps`` last described them (for the metrics, health and memory)."""

from __future__ import annotations

import asyncio
from typing import Any

from shared_ollama.backends.client import EngineApi
from shared_ollama.errors import SharedOllamaError

JsonDict = dict[str, Any]


class LoadedModels:
    def __init__(self, client: EngineApi, timeout: float = 2.0) -> None:
        self._client = client
        self._timeout = timeout
        self.names: list[str] = []
        self.models: list[JsonDict] = []
        """Name, size, size_vram and expires_at of each loaded model, ``size_estimated`` (the engine says its
        size is computed, not measured: the embedded engine's) and, from engines that report it (the embedded
        one), ``load_duration``: nanoseconds the model's current load took."""

    async def refresh(self) -> list[str]:
        """Ask the engine (bounded wait; no answer counts as nothing loaded) and remember the answer."""
        try:
            async with asyncio.timeout(self._timeout):
                ps = await self._client.request_json("GET", "/api/ps")
        except (SharedOllamaError, TimeoutError):
            self.models = []
        else:
            models = ps.get("models")
            listed = models if isinstance(models, list) else []
            self.models = [_known(m) for m in listed if isinstance(m, dict) and m.get("name")]
        self.names = sorted(str(m["name"]) for m in self.models)
        return self.names

    def load_seconds(self) -> dict[str, float]:
        """Seconds each loaded model's current load took, for the models whose engine said so."""
        return {str(m["name"]): m["load_duration"] / 1e9 for m in self.models if "load_duration" in m}


def _known(model: JsonDict) -> JsonDict:
    known = {k: model.get(k) for k in ("name", "size", "size_vram", "expires_at")}
    known["size_estimated"] = bool(model.get("size_estimated"))
    load = model.get("load_duration")
    if isinstance(load, int) and not isinstance(load, bool) and load > 0:
        known["load_duration"] = load
    return known
