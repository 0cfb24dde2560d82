"""What the gateway remembers of the engine's /api/ps (health, the status page, memory)."""

from __future__ import annotations

from typing import Any

from shared_ollama.service.models.loaded import LoadedModels


class FakeClient:
    def __init__(self, ps: dict[str, Any]) -> None:
        self.ps = ps

    async def request_json(self, method: str, path: str) -> dict[str, Any]:
        assert (method, path) == ("GET", "/api/ps")
        return self.ps


async def test_an_estimated_size_stays_marked_as_such() -> None:
    ps = {
        "models": [
            {"name": "embedded:1b", "size": 10, "size_vram": 0, "size_estimated": True, "expires_at": "x"},
            {"name": "ollama:1b", "size": 20, "size_vram": 5, "expires_at": "y"},  # Ollama measures
        ]
    }
    loaded = LoadedModels(FakeClient(ps))  # type: ignore[arg-type]
    assert await loaded.refresh() == ["embedded:1b", "ollama:1b"]
    assert {m["name"]: m["size_estimated"] for m in loaded.models} == {"embedded:1b": True, "ollama:1b": False}
    assert loaded.models[1] == {
        "name": "ollama:1b",
        "size": 20,
        "size_vram": 5,
        "expires_at": "y",
        "size_estimated": False,
    }


async def test_load_durations_are_kept_from_engines_that_report_them() -> None:
    ps = {
        "models": [
            {"name": "embedded:1b", "size": 10, "load_duration": 1_500_000_000},
            {"name": "ollama:1b", "size": 20},  # Ollama's /api/ps has no load time
            {"name": "odd:1b", "size": 30, "load_duration": "soon"},
            {"name": "flag:1b", "size": 30, "load_duration": True},
        ]
    }
    loaded = LoadedModels(FakeClient(ps))  # type: ignore[arg-type]
    await loaded.refresh()
    assert loaded.load_seconds() == {"embedded:1b": 1.5}
    assert loaded.models[0]["load_duration"] == 1_500_000_000
    assert "load_duration" not in loaded.models[1]
