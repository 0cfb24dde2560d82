"""Tenants: who a request is (project header or API key), its role and its limits; settings masking."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shared_ollama.errors import Forbidden, InvalidRequest, Unauthorized
from shared_ollama.service.tenants import (
    DEFAULT_TENANT,
    Limits,
    Role,
    Tenant,
    Tenants,
    load_specs,
)
from shared_ollama.settings import Settings

PROJECT = "x-shared-ollama-project"

FILE = """\
tenants:
  - name: web
    keys: [web-key-1, web-key-2]
    limits:
      max_inflight_text: 10
      queue_timeout_vision: 7.5
  - name: ops
    role: admin
    keys: [ops-key]
  - name: quiet
    limits: {max_prompt_tokens: 100}
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SHARED_OLLAMA_* variable from the caller, and no ./config/tenants.yaml: only what each test sets."""
    for name in list(os.environ):
        if name.startswith("SHARED_OLLAMA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "tenants.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def defaults(settings: Settings) -> Limits:
    return Limits(
        max_inflight_text=settings.max_inflight_text,
        max_inflight_vision=settings.max_inflight_vision,
        max_prompt_tokens=settings.max_prompt_tokens,
        queue_timeout_text=settings.queue_timeout_text,
        queue_timeout_vision=settings.queue_timeout_vision,
    )


# ---------------------------------------------------------------------------------------------- auth off


def test_auth_off_the_project_header_names_the_tenant() -> None:
    tenants = Tenants.from_settings(Settings())
    assert not tenants.auth_enabled
    assert tenants.names() == []
    assert tenants.authenticate({}).name == DEFAULT_TENANT == "default"
    assert tenants.authenticate({PROJECT: ""}).name == "default"
    assert tenants.authenticate({PROJECT: "   "}).name == "default"
    assert tenants.authenticate({PROJECT: "web"}).name == "web"
    assert tenants.authenticate({PROJECT: "  web \t"}).name == "web"
    assert tenants.authenticate({PROJECT: "A.b_c-9"}).name == "A.b_c-9"
    assert tenants.authenticate({PROJECT: "a" * 64}).name == "a" * 64
    # Keys are ignored when auth is off.
    assert tenants.authenticate({PROJECT: "web", "authorization": "Bearer whatever"}).name == "web"


@pytest.mark.parametrize("name", ["bad name", "-leading", ".leading", "a" * 65, "a/b", "a:b", "é", "a\nb", "a;b"])
def test_auth_off_invalid_project_names_are_refused(name: str) -> None:
    tenants = Tenants.from_settings(Settings())
    with pytest.raises(InvalidRequest) as info:
        tenants.authenticate({PROJECT: name})
    assert info.value.status == 400
    assert info.value.param == "X-Shared-Ollama-Project"


def test_auth_off_a_custom_project_header() -> None:
    tenants = Tenants.from_settings(Settings(project_header="X-Team"))
    assert tenants.authenticate({"x-team": "blue", PROJECT: "red"}).name == "blue"
    with pytest.raises(InvalidRequest) as info:
        tenants.authenticate({"x-team": "no spaces"})
    assert info.value.param == "X-Team"


def test_auth_off_everyone_is_admin() -> None:
    tenants = Tenants.from_settings(Settings())
    for headers in ({}, {PROJECT: "web"}):
        tenant = tenants.authenticate(headers)
        assert tenant.role is Role.ADMIN
        assert tenant.is_admin
        tenant.require_admin("pull a model")  # does not raise


def test_auth_off_limits_come_from_the_file_for_header_named_tenants(tmp_path: Path) -> None:
    path = write(tmp_path, "tenants:\n  - name: web\n    limits: {max_inflight_text: 10, queue_timeout_vision: 7}\n")
    settings = Settings(tenants_file=path, max_inflight_text=4, queue_timeout_text=30)
    tenants = Tenants.from_settings(settings)
    assert not tenants.auth_enabled, "a file without keys leaves auth off"
    web = tenants.authenticate({PROJECT: "web"})
    assert web.limits == Limits(
        max_inflight_text=10,
        max_inflight_vision=settings.max_inflight_vision,
        max_prompt_tokens=settings.max_prompt_tokens,
        queue_timeout_text=30,
        queue_timeout_vision=7,
    )
    assert web.is_admin
    other = tenants.authenticate({PROJECT: "other"})
    assert other.limits == defaults(settings)
    assert other.limits.max_inflight_text == 4


def test_default_config_file_is_used_when_present(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", "tenants:\n  - name: web\n    limits: {max_inflight_text: 9}\n")
    tenants = Tenants.from_settings(Settings())
    assert tenants.names() == ["web"]
    assert tenants.authenticate({PROJECT: "web"}).limits.max_inflight_text == 9


# ---------------------------------------------------------------------------------------------- auth on


def test_api_keys_turn_auth_on() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:k1,b:k2:admin"))
    assert tenants.auth_enabled
    assert tenants.names() == ["a", "b"]

    a = tenants.authenticate({"authorization": "Bearer k1"})
    assert (a.name, a.role, a.is_admin) == ("a", Role.USER, False)
    b = tenants.authenticate({"x-api-key": "k2"})
    assert (b.name, b.role, b.is_admin) == ("b", Role.ADMIN, True)
    assert tenants.authenticate({"authorization": "bearer k2"}).name == "b", "the scheme is case-insensitive"
    assert tenants.authenticate({"authorization": "Bearer   k1  "}).name == "a"
    assert tenants.authenticate({"x-api-key": "  k1 "}).name == "a"
    # The project header does not pick the tenant when auth is on.
    assert tenants.authenticate({"authorization": "Bearer k1", PROJECT: "b"}).name == "a"


def test_bearer_wins_over_x_api_key_and_an_empty_bearer_falls_back() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:k1,b:k2"))
    assert tenants.authenticate({"authorization": "Bearer k1", "x-api-key": "k2"}).name == "a"
    assert tenants.authenticate({"authorization": "Bearer ", "x-api-key": "k2"}).name == "b"
    assert tenants.authenticate({"authorization": "Basic k1", "x-api-key": "k2"}).name == "b"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer   "},
        {"authorization": "Basic k1"},
        {"authorization": "k1"},
        {"x-api-key": ""},
        {"x-api-key": "   "},
        {PROJECT: "a"},
    ],
)
def test_missing_key_is_unauthorized(headers: dict[str, str]) -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:k1"))
    with pytest.raises(Unauthorized) as info:
        tenants.authenticate(headers)
    assert info.value.status == 401
    assert "required" in info.value.message


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer wrong"},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer K1"},
        {"authorization": "Bearer k1x"},
        {"x-api-key": "a:k1"},
    ],
)
def test_wrong_key_is_unauthorized(headers: dict[str, str]) -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:k1"))
    with pytest.raises(Unauthorized) as info:
        tenants.authenticate(headers)
    assert info.value.message == "invalid API key"


def test_require_admin() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:k1,b:k2:admin"))
    user = tenants.authenticate({"x-api-key": "k1"})
    with pytest.raises(Forbidden) as info:
        user.require_admin("deleting a model")
    assert info.value.status == 403
    assert "deleting a model" in info.value.message and "'a'" in info.value.message
    tenants.authenticate({"x-api-key": "k2"}).require_admin("deleting a model")  # does not raise


def test_limits_fall_back_to_the_settings_defaults() -> None:
    settings = Settings(
        api_keys="a:k1",
        max_inflight_text=2,
        max_inflight_vision=1,
        max_prompt_tokens=512,
        queue_timeout_text=9,
        queue_timeout_vision=11,
    )
    a = Tenants.from_settings(settings).authenticate({"x-api-key": "k1"})
    assert a.limits == Limits(
        max_inflight_text=2, max_inflight_vision=1, max_prompt_tokens=512, queue_timeout_text=9, queue_timeout_vision=11
    )


def test_cap_and_queue_timeout_per_kind() -> None:
    limits = Limits(
        max_inflight_text=5,
        max_inflight_vision=2,
        max_prompt_tokens=100,
        queue_timeout_text=30,
        queue_timeout_vision=45,
    )
    assert limits.cap("text") == 5
    assert limits.cap("vision") == 2
    assert limits.cap("embed") == 5, "anything that is not vision counts as text"
    assert limits.queue_timeout("text") == 30
    assert limits.queue_timeout("vision") == 45
    assert limits.queue_timeout("embed") == 30


def test_get_known_and_unknown_tenants() -> None:
    settings = Settings(api_keys="a:k1,b:k2:admin")
    tenants = Tenants.from_settings(settings)
    assert tenants.get("b") == Tenant("b", Role.ADMIN, defaults(settings))
    stranger = tenants.get("nobody")
    assert stranger == Tenant("nobody", Role.USER, defaults(settings))
    assert not stranger.is_admin


def test_keys_are_kept_only_as_digests() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:secret-key-1"))
    assert tenants._keys == [(hashlib.sha256(b"secret-key-1").digest(), "a")]


# ---------------------------------------------------------------------------------------------- tenants file


def test_tenants_file_with_keys_roles_and_limits(tmp_path: Path) -> None:
    settings = Settings(tenants_file=write(tmp_path, FILE))
    tenants = Tenants.from_settings(settings)
    assert tenants.auth_enabled
    assert tenants.names() == ["ops", "quiet", "web"]

    for key in ("web-key-1", "web-key-2"):
        for headers in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
            web = tenants.authenticate(headers)
            assert web.name == "web"
            assert web.role is Role.USER
    web = tenants.authenticate({"x-api-key": "web-key-1"})
    assert web.limits.max_inflight_text == 10
    assert web.limits.queue_timeout_vision == 7.5
    assert web.limits.max_inflight_vision == settings.max_inflight_vision
    assert web.limits.queue_timeout_text == settings.queue_timeout_text
    assert web.limits.cap("text") == 10 and web.limits.queue_timeout("vision") == 7.5
    with pytest.raises(Forbidden):
        web.require_admin("pull")

    ops = tenants.authenticate({"x-api-key": "ops-key"})
    assert ops.name == "ops" and ops.is_admin
    assert ops.limits == defaults(settings)
    ops.require_admin("pull")

    # A tenant without keys exists (with its limits) but nobody can authenticate as it.
    assert tenants.get("quiet").limits.max_prompt_tokens == 100
    with pytest.raises(Unauthorized):
        tenants.authenticate({PROJECT: "quiet"})
    with pytest.raises(Unauthorized):
        tenants.authenticate({"x-api-key": "wrong"})


def test_file_and_environment_tenants_combine(tmp_path: Path) -> None:
    settings = Settings(tenants_file=write(tmp_path, FILE), api_keys="extra:xk,ops:ops-key-2")
    tenants = Tenants.from_settings(settings)
    assert tenants.names() == ["extra", "ops", "quiet", "web"]
    assert tenants.authenticate({"x-api-key": "xk"}).name == "extra"
    # The environment adds a key to the file's admin tenant: the tenant stays admin, and both keys work.
    assert tenants.authenticate({"x-api-key": "ops-key"}).is_admin
    second = tenants.authenticate({"x-api-key": "ops-key-2"})
    assert second.name == "ops" and second.is_admin
    assert tenants.authenticate({"x-api-key": "web-key-1"}).limits.max_inflight_text == 10


# (tenants.py, Tenants.__post_init__): a tenant named both in the tenants file and in SHARED_OLLAMA_API_KEYS
# keeps the role merge (admin if either says admin) but loses the file's limits: the later (environment) spec
# replaces the Tenant with one built from empty LimitOverrides, so every key of that tenant, the file's included,
# gets the global defaults. Adding a key through the environment silently drops the tenant's per-tenant limits.
def test_a_key_added_from_the_environment_keeps_the_files_limits(tmp_path: Path) -> None:
    settings = Settings(tenants_file=write(tmp_path, FILE), api_keys="web:web-key-3")
    tenants = Tenants.from_settings(settings)
    for key in ("web-key-1", "web-key-3"):
        assert tenants.authenticate({"x-api-key": key}).limits.max_inflight_text == 10


def test_empty_file_means_no_tenants(tmp_path: Path) -> None:
    tenants = Tenants.from_settings(Settings(tenants_file=write(tmp_path, "")))
    assert not tenants.auth_enabled
    assert tenants.names() == []
    assert load_specs(Settings(tenants_file=write(tmp_path, "tenants: []\n", "b.yaml"))) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("tenants: [\n", id="bad-yaml"),
        pytest.param("tenants:\n  - name: web\n    colour: red\n", id="unknown-tenant-field"),
        pytest.param("tenant:\n  - name: web\n", id="unknown-top-level-field"),
        pytest.param("tenants:\n  - name: web\n    role: root\n", id="bad-role"),
        pytest.param("tenants:\n  - name: bad name\n", id="bad-name"),
        pytest.param("tenants:\n  - role: admin\n", id="missing-name"),
        pytest.param("tenants:\n  - name: web\n    limits: {max_inflight_text: 0}\n", id="limit-below-one"),
        pytest.param("tenants:\n  - name: web\n    limits: {queue_timeout_text: 0}\n", id="zero-timeout"),
        pytest.param("tenants:\n  - name: web\n    limits: {max_queue: 3}\n", id="unknown-limit"),
        pytest.param("tenants:\n  - name: web\n    keys: k1\n", id="keys-not-a-list"),
        pytest.param("- name: web\n", id="not-a-mapping"),
    ],
)
def test_malformed_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text, "broken-tenants.yaml")
    with pytest.raises(ValueError, match="invalid tenants file") as info:
        Tenants.from_settings(Settings(tenants_file=path))
    assert str(path) in str(info.value)


def test_missing_named_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ValueError, match="invalid tenants file") as info:
        load_specs(Settings(tenants_file=path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "spec",
    ["a", "a:", ":k", "a:k:root", "a:k:admin:x", "bad name:k", "a:k1,b"],
)
def test_malformed_api_keys_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="SHARED_OLLAMA_API_KEYS"):
        Tenants.from_settings(Settings(api_keys=spec))


def test_api_keys_tolerate_spaces_and_empty_entries() -> None:
    tenants = Tenants.from_settings(Settings(api_keys=" a:k1 , ,b:k2:user,"))
    assert tenants.names() == ["a", "b"]
    assert tenants.authenticate({"x-api-key": "k1"}).name == "a"
    assert tenants.authenticate({"x-api-key": "k2"}).role is Role.USER


def test_api_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_API_KEYS", "env:ek:admin")
    tenant = Tenants.from_settings(Settings()).authenticate({"authorization": "Bearer ek"})
    assert tenant.name == "env" and tenant.is_admin


# ---------------------------------------------------------------------------------------------- settings


def test_public_dict_masks_api_keys_and_the_redis_password() -> None:
    settings = Settings(api_keys="a:k1-secret,b:k2-secret:admin", redis_url="redis://user:p4ss@w0rd@redis.local:6379/0")
    shown = settings.public_dict()
    assert shown["api_keys"] == "***"
    assert shown["redis_url"] == "redis://***@redis.local:6379/0"
    text = repr(shown)
    for secret in ("k1-secret", "k2-secret", "p4ss", "w0rd", "user"):
        assert secret not in text


def test_public_dict_leaves_harmless_values_alone() -> None:
    shown = Settings(redis_url="redis://redis.local:6379/0").public_dict()
    assert shown["api_keys"] == ""
    assert shown["redis_url"] == "redis://redis.local:6379/0"
    assert Settings().public_dict()["redis_url"] is None


# (settings.py, Settings.public_dict): a redis_url with credentials but no "scheme://" (e.g. a mistyped
# "user:pw@host:6379") is not masked: partition("://") leaves the whole value in ``scheme`` and the result is
# "user:pw@host:6379://***@", which still shows the password in ``shared-ollama config show``.
def test_public_dict_masks_a_password_even_without_a_scheme() -> None:
    shown = Settings(redis_url="user:pw-secret@redis.local:6379").public_dict()
    assert "pw-secret" not in str(shown["redis_url"])


def test_one_key_for_two_tenants_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="two tenants"):
        Tenants.from_settings(Settings(api_keys="a:same-key,b:same-key"))


def test_the_tenants_repr_shows_no_key() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:very-secret-key"))
    assert "very-secret-key" not in repr(tenants)
