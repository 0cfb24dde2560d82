"""The tenants in force, computed from the configuration and the kept changes: merges, revocations, key ids."""

from __future__ import annotations

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.admission.tenant_db import KeyRecord, Snapshot
from shared_ollama.service.admission.tenant_state import (
    digest_of,
    effective,
    key_id,
    key_prefix,
    merge_config,
    merge_patch,
    revoked_record,
    validated,
)
from shared_ollama.service.admission.tenants import LimitOverrides, Role, TenantSpec


def test_a_merge_patch_merges_objects_and_null_removes() -> None:
    target = {"name": "a", "limits": {"max_inflight_text": 2, "max_prompt_tokens": 9}, "cache": "exact"}
    patched = merge_patch(target, {"limits": {"max_prompt_tokens": None, "queue_timeout_text": 5}, "cache": None})
    assert patched == {"name": "a", "limits": {"max_inflight_text": 2, "queue_timeout_text": 5}}
    assert target["cache"] == "exact", "the target is not changed in place"
    assert merge_patch({"limits": {"a": 1}}, {"limits": 3}) == {"limits": 3}


def test_a_tenant_in_the_file_and_the_environment_is_one() -> None:
    file_spec = TenantSpec(name="web", keys=["k1"], limits=LimitOverrides(max_inflight_text=4), cache="exact")
    env_spec = TenantSpec(name="web", role=Role.ADMIN, keys=["k2", "k1"])
    merged = merge_config([file_spec, env_spec, TenantSpec(name="ops")])
    assert sorted(merged) == ["ops", "web"]
    web = merged["web"]
    assert web.role is Role.ADMIN and web.keys == ["k1", "k2"]
    assert web.limits.max_inflight_text == 4 and web.cache == "exact", "the environment does not reset the file's"


def test_the_snapshot_goes_on_top_of_the_configuration() -> None:
    config = merge_config([TenantSpec(name="web", keys=["k1", "k2"]), TenantSpec(name="old", keys=["k3"])])
    made = KeyRecord(key_id(digest_of("so-new")), "web", digest_of("so-new").hex(), "so-", 1.0)
    orphan = KeyRecord("x", "gone", digest_of("so-orphan").hex(), "so-", 1.0)
    snapshot = Snapshot(
        3,
        {"old": None, "app": {"name": "app", "role": "admin"}},
        {made.id: made, "r": revoked_record("web", "k2"), orphan.id: orphan},
    )
    result = effective(config, snapshot)
    assert sorted(result.specs) == ["app", "web"], "a deletion hides the configured tenant"
    assert result.specs["web"].keys == ["k1"], "a revoked configured key is dropped"
    assert result.digests == {digest_of("so-new"): "web"}, "keys of unknown tenants are dropped"
    assert result.from_api == {"app"}
    assert result.keyed and not result.admin_keyed


def test_key_ids_and_prefixes_reveal_little() -> None:
    assert key_id(digest_of("a")) == key_id(digest_of("a")) != key_id(digest_of("b"))
    assert len(key_id(digest_of("a"))) == 12
    assert key_prefix("so-" + "x" * 43) == "so-xxxxxxx"
    assert key_prefix("key-web") == "k", "at most a quarter of a short key"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"name": "a", "keys": []}, "keys"), ({"name": "a", "extra": 1}, "extra"), ({"name": ""}, "name")],
)
def test_bad_bodies_name_their_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validated(body)
    assert refused.value.param == param
    assert param in refused.value.message
