"""Tenants configuration: the tenants file, SHARED_OLLAMA_API_KEYS, how they combine, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_ollama.errors import Forbidden, Unauthorized
from shared_ollama.service.admission.tenants import Role, Tenants, load_specs
from shared_ollama.settings import Settings
from tests.support.tenants import PROJECT, defaults, write

pytestmark = pytest.mark.usefixtures("isolated_env")


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


# ---------------------------------------------------------------------------------------------- start-up


def test_one_key_for_two_tenants_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="two tenants"):
        Tenants.from_settings(Settings(api_keys="a:same-key,b:same-key"))


def test_the_tenants_repr_shows_no_key() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:very-secret-key"))
    assert "very-secret-key" not in repr(tenants)
