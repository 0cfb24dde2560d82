"""Which models the engine holds, as ``/api/ps`` last described them (for the metrics, health and memory)."""

from __future__ import annotations

import asyncio
from typing import Any

from shared_ollama.backends.client import EngineClient
from shared_ollama.errors import SharedOllamaError

JsonDict = dict[str, Any]


class LoadedModels:
    def __init__(self, client: EngineClient, timeout: float = 2.0) -> None:
        self._client = client
        self._timeout = timeout
        self.names: list[str] = []
        self.models: list[JsonDict] = []
        """Name, size, size_vram and expires_at of each loaded model, and ``size_estimated`` (the engine says its
        size is computed, not measured: the embedded engine's)."""

    async def refresh(self) -> list[str]:
        """Ask the engine (bounded wait; no answer counts as nothing loaded) and remember the answer."""
        try:
            async with asyncio.timeout(self._timeout):
                ps = await self._client.request_json("GET", "/api/ps")
        except (SharedOllamaError, TimeoutError):
            self.models = []
        else:
            models = ps.get("models") if isinstance(ps.get("models"), list) else []
            self.models = [
                {
                    **{k: m.get(k) for k in ("name", "size", "size_vram", "expires_at")},
                    "size_estimated": bool(m.get("size_estimated")),
                }
                for m in models
                if isinstance(m, dict) and m.get("name")
            ]
        self.names = sorted(str(m["name"]) for m in self.models)
        return self.names
