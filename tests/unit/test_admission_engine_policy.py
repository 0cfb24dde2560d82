"""The engine-level policy's decisions on request bodies (no engine: a fake clock and a plain model policy)."""

from __future__ import annotations

from typing import Any

import pytest

from shared_ollama.errors import Forbidden, InvalidRequest
from shared_ollama.service.admission.engine_policy import EnginePolicy, ModelUsers
from shared_ollama.service.admission.tenant_policy import PolicyOverrides, TenantPolicy, resolve_policy
from shared_ollama.service.admission.tenants import Limits, Role, Tenant, Tenants, TenantSpec
from shared_ollama.service.models.policy import ModelLimits, ModelPolicy
from shared_ollama.settings import Settings

IDLE = 300.0
LIMITS = Limits(6, 3, 4096, 120.0, 150.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pinning(ModelPolicy):
    def __init__(self, pinned: dict[str, Any] | None = None, output: int | None = None) -> None:
        super().__init__(None, ModelLimits(2, 2, IDLE, {}))
        self._pinned = pinned or {}
        self._output = output

    def pinned(self, model: str) -> dict[str, Any]:
        return dict(self._pinned)

    def default_output(self, model: str) -> int | None:
        return self._output


def tenant(name: str = "web", **policy: Any) -> Tenant:
    return Tenant(name, Role.USER, LIMITS, policy=TenantPolicy(**policy))


def engine_policy(models: ModelPolicy | None = None, clock: Clock | None = None) -> EnginePolicy:
    return EnginePolicy(models or Pinning(), ModelUsers(clock or Clock()), engine_num_ctx=4096, default_output=1024)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_keep_alive_zero_is_ignored_while_another_tenant_uses_the_model() -> None:
    clock = Clock()
    policy = engine_policy(clock=clock)
    policy.used("smollm2:135m", "other")
    body = chat(keep_alive=0)
    applied = policy.apply(tenant(), "/api/chat", body)
    assert "keep_alive" not in body
    assert "keep_alive=0 ignored" in applied.notes[0]
    clock.now += IDLE + 1  # the other tenant's use is older than the idle timeout
    body = chat(keep_alive="0s")
    policy.apply(tenant(), "/api/chat", body)
    assert body["keep_alive"] == "0s"


@pytest.mark.parametrize("short", ["1ms", 0.001, "1s", 299])
def test_a_keep_alive_shorter_than_the_idle_timeout_is_ignored_too_while_others_use_the_model(short: object) -> None:
    policy = engine_policy()
    policy.used("smollm2:135m", "other")
    body = chat(keep_alive=short)
    applied = policy.apply(tenant(), "/api/chat", body)
    assert "keep_alive" not in body, "a moment later is the same unload to the other tenants"
    assert f"keep_alive={short} ignored" in applied.notes[0]


def test_keep_alive_zero_is_honoured_when_only_the_tenant_itself_used_the_model() -> None:
    policy = engine_policy()
    policy.used("smollm2:135m", "web")
    body = chat(keep_alive=0)
    assert policy.apply(tenant(), "/api/chat", body).notes == ["num_predict=1024 (default)"]
    assert body["keep_alive"] == 0


@pytest.mark.parametrize("asked", [-1, "-1m", "2h", 301, "100000h"])
def test_forever_and_long_keep_alive_are_clamped_to_the_idle_timeout(asked: object) -> None:
    body = chat(keep_alive=asked)
    applied = engine_policy().apply(tenant(), "/api/chat", body)
    assert body["keep_alive"] == "300s"
    assert f"keep_alive={asked} clamped to 300s" in applied.notes


def test_keep_alive_within_the_tenants_maximum_passes_and_a_custom_maximum_applies() -> None:
    body = chat(keep_alive="4m")
    engine_policy().apply(tenant(), "/api/chat", body)
    assert body["keep_alive"] == "4m"
    body = chat(keep_alive=-1)
    engine_policy().apply(tenant(max_keep_alive_seconds=3600), "/api/chat", body)
    assert body["keep_alive"] == "3600s"


def test_a_bad_keep_alive_is_a_400_naming_it() -> None:
    with pytest.raises(InvalidRequest) as caught:
        engine_policy().apply(tenant(), "/api/chat", chat(keep_alive="soon"))
    assert caught.value.param == "keep_alive"


def test_exempt_tenants_keep_their_keep_alive_and_load_options() -> None:
    policy = engine_policy()
    policy.used("smollm2:135m", "other")
    body = chat(keep_alive=-1, options={"num_ctx": 8192, "num_predict": 5})
    assert policy.apply(tenant("ops", exempt=True), "/api/chat", body).notes == []
    assert body["keep_alive"] == -1
    assert body["options"] == {"num_ctx": 8192, "num_predict": 5}


def test_load_time_options_are_dropped_or_pinned_and_never_passed_through() -> None:
    policy = engine_policy(Pinning({"num_ctx": 2048}))
    body = chat(options={"num_ctx": 8192, "num_batch": 64, "use_mmap": False, "temperature": 0.1})
    applied = policy.apply(tenant(), "/api/chat", body)
    assert body["options"] == {"num_ctx": 2048, "temperature": 0.1, "num_predict": 1024}
    assert applied.pinned == ["num_ctx=2048 (asked 8192)"]
    assert "num_batch=64 ignored (a load-time option of a shared model)" in applied.notes
    assert "use_mmap=False ignored (a load-time option of a shared model)" in applied.notes


def test_a_smaller_num_ctx_becomes_the_prompt_bound_without_reaching_the_engine() -> None:
    body = chat(options={"num_ctx": 1024})
    applied = engine_policy().apply(tenant(), "/api/chat", body)
    assert "num_ctx" not in body["options"]
    assert applied.prompt_limit == 1024
    larger = chat(options={"num_ctx": 131072})
    applied = engine_policy().apply(tenant(), "/api/chat", larger)
    assert "num_ctx" not in larger["options"] and applied.prompt_limit is None


def test_a_tenant_allowed_to_load_variants_sends_its_options() -> None:
    body = chat(options={"num_ctx": 8192})
    engine_policy(Pinning({"num_batch": 32})).apply(tenant(load_variants=True), "/api/chat", body)
    assert body["options"] == {"num_ctx": 8192, "num_batch": 32, "num_predict": 1024}


def test_default_output_cap_tenant_then_model_then_service() -> None:
    body = chat()
    engine_policy().apply(tenant(), "/api/chat", body)
    assert body["options"]["num_predict"] == 1024
    body = chat()
    engine_policy(Pinning(output=64)).apply(tenant(), "/api/generate", body)
    assert body["options"]["num_predict"] == 64
    body = chat()
    engine_policy(Pinning(output=64)).apply(tenant(default_max_output_tokens=16), "/api/chat", body)
    assert body["options"]["num_predict"] == 16
    embed = {"model": "all-minilm", "input": "x"}
    engine_policy().apply(tenant(), "/api/embed", embed)
    assert "num_predict" not in embed["options"], "embeddings generate nothing"


@pytest.mark.parametrize("asked", [4096, -1, -2])
def test_output_above_the_ceiling_is_clamped_and_said(asked: int) -> None:
    body = chat(options={"num_predict": asked})
    applied = engine_policy().apply(tenant(max_output_tokens=256), "/api/chat", body)
    assert body["options"]["num_predict"] == 256
    assert applied.notes == [f"num_predict={asked} clamped to 256"]


def test_output_above_the_ceiling_is_refused_when_the_policy_says_so() -> None:
    with pytest.raises(InvalidRequest) as caught:
        engine_policy().apply(
            tenant(max_output_tokens=256, output_over_ceiling="refuse"), "/api/chat", chat(options={"num_predict": 300})
        )
    assert caught.value.param == "num_predict"
    body = chat(options={"num_predict": 200})
    engine_policy().apply(tenant(max_output_tokens=256, output_over_ceiling="refuse"), "/api/chat", body)
    assert body["options"]["num_predict"] == 200


def test_the_default_never_exceeds_the_ceiling() -> None:
    body = chat()
    engine_policy().apply(tenant(max_output_tokens=100), "/api/chat", body)
    assert body["options"]["num_predict"] == 100


def test_allow_and_deny_lists() -> None:
    allowed = tenant(models=("smollm2:*", "all-minilm"), deny_models=("smollm2:360m",))
    engine_policy().apply(allowed, "/api/chat", chat())
    engine_policy().apply(allowed, "/api/embed", {"model": "all-minilm:latest", "input": "x"})
    for model in ("smollm2:360m", "qwen3:0.6b"):
        with pytest.raises(Forbidden) as caught:
            engine_policy().apply(allowed, "/api/chat", chat(model=model))
        assert model in caught.value.message
        assert caught.value.param == "model"
    assert tenant("ops", exempt=True, models=()).policy.allows("anything")


def test_model_users_forget_old_uses() -> None:
    clock = Clock()
    users = ModelUsers(clock)
    users.touch("m", "a", 10)
    clock.now += 11
    users.touch("m", "b", 10)
    assert users.others_within("m", "c", 100) == ["b"], "a's use was dropped when b's was noted"


def test_policy_from_the_tenants_file_and_the_admin_exemption() -> None:
    settings = Settings(api_keys="ops:k1:admin", default_max_output_tokens=512, max_output_tokens=2048)
    specs = [
        TenantSpec(name="web", keys=["k2"], policy=PolicyOverrides(models=["smollm2*"], max_output_tokens=64)),
        TenantSpec(name="web", policy=PolicyOverrides(manage_models=True)),
    ]
    tenants = Tenants(settings, [*specs, TenantSpec(name="ops", role=Role.ADMIN, keys=["k1"])])
    web = tenants.get("web").policy
    assert (web.models, web.max_output_tokens, web.manage_models, web.exempt) == (("smollm2*",), 64, True, False)
    assert tenants.get("ops").policy.exempt
    assert tenants.get("stranger").policy.max_output_tokens == 2048
    strict = Settings(api_keys="ops:k1:admin", policy_exempt_admin=False)
    assert not Tenants.from_settings(strict).get("ops").policy.exempt
    open_tenants = Tenants(Settings(), [TenantSpec(name="ops", role=Role.ADMIN)])
    assert not open_tenants.authenticate({}).policy.exempt, "with auth off nobody holds a key to be exempt by"
    assert resolve_policy(Settings(), PolicyOverrides(exempt=True), admin_key=False).exempt
