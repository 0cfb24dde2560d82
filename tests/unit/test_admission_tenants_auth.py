"""Tenants: who a request is (project header or API key), its role and its limits, with auth off and on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared_ollama.errors import Forbidden, InvalidRequest, Unauthorized
from shared_ollama.service.admission.tenant_policy import TenantPolicy
from shared_ollama.service.admission.tenants import DEFAULT_TENANT, Limits, Role, Tenant, Tenants
from shared_ollama.settings import Settings
from tests.support.tenants import PROJECT, defaults, write

pytestmark = pytest.mark.usefixtures("isolated_env")


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
    assert tenants.get("b") == Tenant("b", Role.ADMIN, defaults(settings), policy=TenantPolicy(exempt=True))
    stranger = tenants.get("nobody")
    assert stranger == Tenant("nobody", Role.USER, defaults(settings))
    assert not stranger.is_admin


def test_keys_are_kept_only_as_digests() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="a:secret-key-1"))
    assert tenants._keys == [(hashlib.sha256(b"secret-key-1").digest(), "a")]
