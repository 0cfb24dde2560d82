"""The engine-level tenant policy against the real engine: what one tenant's request may do to the model every
other tenant shares, checked on the engine's own state (``/api/ps``: what is loaded, until when, with which
context) and on its answers (``eval_count``, ``done_reason``, ``load_duration``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import yaml

from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
EMBED_MODEL = "all-minilm"
DEFAULT_OUTPUT = 6
IDLE = 300
KEYS = {name: f"key-{name}" for name in ("ops", "web", "other", "narrow", "capped", "strict", "maker", "curator")}
TENANTS = {
    "tenants": [
        {"name": "ops", "role": "admin", "keys": [KEYS["ops"]]},
        {"name": "web", "keys": [KEYS["web"]]},
        {"name": "other", "keys": [KEYS["other"]]},
        {"name": "narrow", "keys": [KEYS["narrow"]], "policy": {"models": [EMBED_MODEL]}},
        {"name": "capped", "keys": [KEYS["capped"]], "policy": {"max_output_tokens": 3}},
        {
            "name": "strict",
            "keys": [KEYS["strict"]],
            "policy": {"max_output_tokens": 3, "output_over_ceiling": "refuse"},
        },
        {"name": "maker", "keys": [KEYS["maker"]], "policy": {"manage_models": True}},
        {"name": "curator", "keys": [KEYS["curator"]], "policy": {"manage_models": True, "models": ["curated-*"]}},
    ]
}
HI = [{"role": "user", "content": "Tell me a long story about the sea."}]
JsonDict = dict[str, Any]


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture(scope="module")
def policy_url(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    data = tmp_path_factory.mktemp("gw-policy")
    tenants_file = data / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(TENANTS))
    url, proc = start_gateway(
        model_store,
        data,
        artifacts_dir / "gateway-policy-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_TENANTS_FILE": str(tenants_file),
            "SHARED_OLLAMA_DEFAULT_MAX_OUTPUT_TOKENS": str(DEFAULT_OUTPUT),
            "SHARED_OLLAMA_IDLE_UNLOAD_SECONDS": str(IDLE),
        },
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(policy_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=policy_url, timeout=120) as client:
        yield client


def client(url: str, tenant: str) -> ollama.Client:
    return ollama.Client(host=url, headers=auth(tenant), timeout=120)


def running(http: httpx.Client) -> dict[str, JsonDict]:
    """The engine's loaded models, by name (``/api/ps`` answered by the engine)."""
    resp = http.get("/api/ps", headers=auth("ops"))
    assert resp.status_code == 200, resp.text
    return {m["name"]: m for m in resp.json()["models"]}


def chat(http: httpx.Client, tenant: str, **fields: Any) -> httpx.Response:
    body = {"model": CHAT_MODEL, "messages": HI, "stream": False, **fields}
    return http.post("/api/chat", json=body, headers=auth(tenant))


def test_a_users_keep_alive_zero_does_not_unload_what_another_tenant_uses_but_an_admins_does(
    policy_url: str, http: httpx.Client
) -> None:
    client(policy_url, "other").chat(CHAT_MODEL, messages=HI, options={"num_predict": 1})
    unload = http.post("/api/generate", json={"model": CHAT_MODEL, "keep_alive": 0}, headers=auth("web"))
    assert unload.status_code == 200, unload.text
    assert "keep_alive=0 ignored" in unload.headers["X-Shared-Ollama-Policy"]
    assert CHAT_MODEL in running(http), "the engine still holds the model another tenant uses"
    client(policy_url, "ops").generate(CHAT_MODEL, keep_alive=0)
    poll(lambda: CHAT_MODEL not in running(http), "the admin's keep_alive 0 to unload the model in the engine")


def test_a_users_keep_alive_forever_is_clamped_to_the_idle_timeout(http: httpx.Client) -> None:
    resp = chat(http, "web", keep_alive=-1, options={"num_predict": 1})
    assert resp.status_code == 200, resp.text
    assert f"keep_alive=-1 clamped to {IDLE}s" in resp.headers["X-Shared-Ollama-Policy"]
    expires = datetime.fromisoformat(running(http)[CHAT_MODEL]["expires_at"].replace("Z", "+00:00"))
    assert (expires - datetime.now(UTC)).total_seconds() <= IDLE + 5, "the engine keeps it no longer than allowed"
    pinned = chat(http, "ops", keep_alive=-1, options={"num_predict": 1})  # an admin may pin
    assert "X-Shared-Ollama-Policy" not in pinned.headers
    assert datetime.fromisoformat(running(http)[CHAT_MODEL]["expires_at"].replace("Z", "+00:00")).year > 2100


def test_another_num_ctx_never_reloads_the_shared_model(policy_url: str, http: httpx.Client) -> None:
    client(policy_url, "other").chat(CHAT_MODEL, messages=HI, options={"num_predict": 1})
    context = running(http)[CHAT_MODEL]["context_length"]
    loads = http.get("/api/ps", headers=auth("ops")).json()["loads"][CHAT_MODEL]
    larger = chat(http, "web", options={"num_ctx": context * 2, "num_predict": 1})
    assert larger.status_code == 200, larger.text
    assert larger.json()["load_duration"] == 0
    assert f"num_ctx={context * 2} ignored" in larger.headers["X-Shared-Ollama-Policy"]
    after = client(policy_url, "other").chat(CHAT_MODEL, messages=HI, options={"num_predict": 1})
    assert after.load_duration == 0, "the next client of another tenant found the model as it left it"
    assert running(http)[CHAT_MODEL]["context_length"] == context
    assert http.get("/api/ps", headers=auth("ops")).json()["loads"][CHAT_MODEL] == loads, "the engine loaded nothing"
    smaller = chat(http, "web", messages=[{"role": "user", "content": "word " * 80}], options={"num_ctx": 32})
    assert smaller.status_code == 400 and smaller.json()["code"] == "prompt_too_large", smaller.text


def test_a_generation_without_num_predict_stops_at_the_default(policy_url: str, http: httpx.Client) -> None:
    answer = client(policy_url, "web").chat(CHAT_MODEL, messages=HI)
    assert answer.eval_count == DEFAULT_OUTPUT
    assert answer.done_reason == "length"
    resp = chat(http, "web")
    assert f"num_predict={DEFAULT_OUTPUT} (default)" in resp.headers["X-Shared-Ollama-Policy"]


def test_the_output_ceiling_clamps_or_refuses(http: httpx.Client) -> None:
    clamped = chat(http, "capped", options={"num_predict": 50})
    assert clamped.status_code == 200, clamped.text
    assert clamped.json()["eval_count"] == 3
    assert "num_predict=50 clamped to 3" in clamped.headers["X-Shared-Ollama-Policy"]
    refused = chat(http, "strict", options={"num_predict": 50})
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_request" and "num_predict" in refused.json()["error"]


def test_the_allow_list(policy_url: str, http: httpx.Client) -> None:
    refused = chat(http, "narrow", options={"num_predict": 1})
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden" and CHAT_MODEL in refused.json()["error"]
    with pytest.raises(ollama.ResponseError) as caught:
        client(policy_url, "narrow").chat(CHAT_MODEL, messages=HI)
    assert caught.value.status_code == 403
    embedded = client(policy_url, "narrow").embed(EMBED_MODEL, input="allowed")
    assert len(embedded.embeddings[0]) == 384
    shown = http.post("/api/show", json={"model": CHAT_MODEL}, headers=auth("narrow"))
    assert shown.status_code == 403, "details of a model the tenant may not use are not shown either"
    listed = [m.model for m in client(policy_url, "narrow").list().models]
    assert listed == [f"{EMBED_MODEL}:latest"], "the tenant's model list shows only what it may use"
    openai_listed = http.get("/v1/models", headers=auth("narrow")).json()["data"]
    assert [m["id"] for m in openai_listed] == [f"{EMBED_MODEL}:latest"]
    assert CHAT_MODEL in [m.model for m in client(policy_url, "web").list().models]


def test_managing_models_needs_admin_or_the_policy(policy_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client(policy_url, "web").copy(CHAT_MODEL, "web-copy")
    assert caught.value.status_code == 403
    maker = client(policy_url, "maker")
    maker.copy(CHAT_MODEL, "maker-copy")
    assert any(m.model == "maker-copy:latest" for m in maker.list().models)
    maker.delete("maker-copy")
    with pytest.raises(ollama.ResponseError) as outside:  # manages only the models it may use
        client(policy_url, "curator").copy(CHAT_MODEL, "curated-copy")
    assert outside.value.status_code == 403
    unload = httpx.post(f"{policy_url}/api/v1/models/{CHAT_MODEL}/unload", headers=auth("maker"), timeout=30)
    assert unload.status_code == 403, "unloading acts on every tenant: it stays an admin's"
