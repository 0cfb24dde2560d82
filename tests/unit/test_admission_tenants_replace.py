"""Swapping the tenants' index at once: new keys and limits in force, resolved tenants untouched, bad ones refused."""

from __future__ import annotations

import hashlib

import pytest

from shared_ollama.errors import Unauthorized
from shared_ollama.service.admission.tenants import LimitOverrides, Role, Tenants, TenantSpec
from shared_ollama.settings import Settings


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_replace_swaps_the_index_and_keeps_resolved_tenants() -> None:
    tenants = Tenants.from_settings(Settings(api_keys="web:k1,ops:k0:admin"))
    before = tenants.authenticate(bearer("k1"))
    assert before.name == "web"
    tenants.replace(
        [
            TenantSpec(name="web", limits=LimitOverrides(max_inflight_text=1)),
            TenantSpec(name="ops", role=Role.ADMIN, keys=["k0"]),
        ],
        {hashlib.sha256(b"k2").digest(): "web"},
    )
    with pytest.raises(Unauthorized):
        tenants.authenticate(bearer("k1"))
    after = tenants.authenticate(bearer("k2"))
    assert after.name == "web" and after.limits.max_inflight_text == 1
    assert before.limits.max_inflight_text == 6, "the tenant a request resolved before stays as it was"
    assert tenants.names() == ["ops", "web"]


def test_digests_alone_turn_auth_on() -> None:
    tenants = Tenants(Settings())
    assert not tenants.auth_enabled
    tenants.replace([TenantSpec(name="ops", role=Role.ADMIN)], {hashlib.sha256(b"k").digest(): "ops"})
    assert tenants.auth_enabled and tenants.authenticate(bearer("k")).is_admin


@pytest.mark.parametrize(
    ("specs", "digests"),
    [
        ([TenantSpec(name="a", keys=["k"]), TenantSpec(name="b", keys=["k"])], {}),
        ([TenantSpec(name="a", keys=["k"]), TenantSpec(name="b")], {hashlib.sha256(b"k").digest(): "b"}),
        ([TenantSpec(name="a")], {hashlib.sha256(b"k").digest(): "unknown"}),
    ],
)
def test_a_bad_index_is_refused_and_the_old_one_stays(specs: list[TenantSpec], digests: dict[bytes, str]) -> None:
    tenants = Tenants.from_settings(Settings(api_keys="web:k1"))
    with pytest.raises(ValueError):
        tenants.replace(specs, digests)
    assert tenants.authenticate(bearer("k1")).name == "web"
    assert tenants.names() == ["web"]
