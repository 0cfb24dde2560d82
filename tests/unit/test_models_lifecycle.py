"""Start-up of the model lifecycle: preloading the profile's models, and the models config's location."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared_ollama.errors import ModelNotFound
from shared_ollama.service.models.lifecycle import models_config_path, preload
from shared_ollama.service.models.profiles import Profile, ProfileModel
from shared_ollama.settings import Settings


class FakeModels:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    async def load(self, name: str) -> dict[str, Any]:
        if name == "missing:1b":
            raise ModelNotFound(f"model '{name}' not found")
        self.loaded.append(name)
        return {}


def selection(*models: tuple[str, bool]) -> Any:
    profile = Profile(
        name="p",
        description="",
        models=[ProfileModel(name=n, role="text", expected_memory_gb=1.0, preload=p) for n, p in models],
    )
    return SimpleNamespace(profile=profile)


async def test_preload_loads_only_the_preload_models_and_survives_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    models = FakeModels()
    await preload(models, selection(("a:1b", True), ("missing:1b", True), ("b:1b", False), ("c:1b", True)))
    assert models.loaded == ["a:1b", "c:1b"]
    assert "preloading missing:1b failed" in caplog.text


def test_models_config_is_the_setting_else_the_repository_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = tmp_path / "mine.yaml"
    assert models_config_path(Settings(models_config=chosen)) == chosen
    monkeypatch.chdir(tmp_path)
    assert models_config_path(Settings()) is None
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "models.yaml").write_text("x")
    assert models_config_path(Settings()) == Path("config/models.yaml")
