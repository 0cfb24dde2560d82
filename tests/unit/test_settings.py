"""The one settings object, and how it shows itself with secrets masked."""

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


# ---------------------------------------------------------------------------------------------- public_dict masking


@pytest.mark.usefixtures("isolated_env")
def test_public_dict_masks_api_keys_and_the_redis_password() -> None:
    settings = Settings(
        api_keys="a:k1-secret,b:k2-secret:admin", redis_url="redis://rediser:p4ss@w0rd@redis.local:6379/0"
    )
    shown = settings.public_dict()
    assert shown["api_keys"] == "***"
    assert shown["redis_url"] == "redis://***@redis.local:6379/0"
    text = repr(shown)
    for secret in ("k1-secret", "k2-secret", "p4ss", "w0rd", "rediser"):
        assert secret not in text


@pytest.mark.usefixtures("isolated_env")
def test_public_dict_leaves_harmless_values_alone() -> None:
    shown = Settings(redis_url="redis://redis.local:6379/0").public_dict()
    assert shown["api_keys"] == ""
    assert shown["redis_url"] == "redis://redis.local:6379/0"
    assert Settings().public_dict()["redis_url"] is None


# (settings.py, Settings.public_dict): a redis_url with credentials but no "scheme://" (e.g. a mistyped
# "user:pw@host:6379") is not masked: partition("://") leaves the whole value in ``scheme`` and the result is
# "user:pw@host:6379://***@", which still shows the password in ``shared-ollama config show``.
@pytest.mark.usefixtures("isolated_env")
def test_public_dict_masks_a_password_even_without_a_scheme() -> None:
    shown = Settings(redis_url="user:pw-secret@redis.local:6379").public_dict()
    assert "pw-secret" not in str(shown["redis_url"])


def test_the_engine_token_is_read_from_the_environment_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_ENGINE_TOKEN", "t0ken-secret")
    settings = Settings()
    assert settings.engine_token == "t0ken-secret"
    assert settings.public_dict()["engine_token"] == "***"
    assert "t0ken-secret" not in repr(settings)


def test_the_hugging_face_token_is_never_shown_and_urls_lose_their_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_HF_TOKEN", "hf_s3cret")
    monkeypatch.setenv("SHARED_OLLAMA_HF_ENDPOINT", "http://mirror.local/")
    monkeypatch.setenv("SHARED_OLLAMA_REGISTRY_URL", "http://registry.local/")
    settings = Settings()
    assert (settings.hf_token, settings.hf_endpoint, settings.registry_url) == (
        "hf_s3cret",
        "http://mirror.local",
        "http://registry.local",
    )
    assert settings.public_dict()["hf_token"] == "***" and "hf_s3cret" not in repr(settings)
