"""The one settings object."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared_ollama.settings import Settings


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_PORT", "9001")
    monkeypatch.setenv("SHARED_OLLAMA_ENGINE", "embedded")
    monkeypatch.setenv("SHARED_OLLAMA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHARED_OLLAMA_OLLAMA_URL", "http://127.0.0.1:11434/")
    settings = Settings()
    assert settings.port == 9001
    assert settings.engine == "embedded"
    assert settings.store_dir == tmp_path / "models"
    assert settings.ollama_url == "http://127.0.0.1:11434"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_ENGINE", "docker")
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_immutable_and_models_dir_overrides() -> None:
    settings = Settings(models_dir=Path("/tmp/store"))
    assert settings.store_dir == Path("/tmp/store")
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    assert settings.threads >= 1
    assert settings.public_dict()["default_model"] == "smollm2:135m"
