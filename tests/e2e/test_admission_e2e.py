"""Admission with the real engine and models: the prompt limit counted with the model's tokenizer, the
tenant cap as the official ollama and openai clients see it, keys sent by those clients, and every counter
back at zero afterwards.

Real generations are few and short (the engine runs on a couple of CPU cores); the one long generation
(a schema that needs a thousand numbers, so it cannot end early) only holds a tenant's place, from the moment
the gateway and the engine both show it running, and is then abandoned.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from shared_ollama.backends.client import EngineClient
from shared_ollama.service.admission.prompts import check_prompt_size
from shared_ollama.settings import Settings
from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
PROMPT_LIMIT = 200
HI = [{"role": "user", "content": "Hi"}]
SENTENCE = "The quick brown fox jumps over the lazy dog. "
UNDER = [{"role": "user", "content": SENTENCE * 12}]  # ~150 tokens, over the cheap byte bound: counted exactly
OVER = [{"role": "user", "content": SENTENCE * 25}]  # ~280 tokens
HOLD = [{"role": "user", "content": "List the numbers from 1 to 1000."}]
LONG = {"type": "array", "items": {"type": "integer"}, "minItems": 1000}  # an answer that cannot end early
BUSY = "busy"
USED_TENANTS = ("default", "limits", BUSY)
POLL_TIMEOUT = 30.0
JsonDict = dict[str, Any]


def project(name: str) -> dict[str, str]:
    return {"X-Shared-Ollama-Project": name}


@pytest.fixture(scope="module")
def admission_url(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway in front of the session's real engine: a 200-token prompt limit, one text request per tenant."""
    url, proc = start_gateway(
        model_store,
        tmp_path_factory.mktemp("gw-admission"),
        artifacts_dir / "gateway-admission-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_MAX_PROMPT_TOKENS": str(PROMPT_LIMIT),
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "1",
        },
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(admission_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admission_url, timeout=120) as client:
        yield client


def stats(client: httpx.Client, headers: dict[str, str] | None = None) -> JsonDict:
    resp = client.get("/api/v1/queue/stats", headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds (bounded): readiness polling, not a timed assertion."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out after {POLL_TIMEOUT}s waiting for: {what}"
        time.sleep(0.05)


def assert_drained(client: httpx.Client, tenants: tuple[str, ...], headers: dict[str, str] | None = None) -> None:
    """Queue, slots and every listed tenant's in-flight count at zero (each tenant's own view)."""
    for name in tenants:
        view = headers if headers is not None else project(name)

        def settled(view: dict[str, str] = view) -> bool:
            snapshot = stats(client, view)
            return snapshot["queue_depth"] == 0 and snapshot["engine_slots"]["in_use"] == 0

        until(settled, "queue and engine slots drained")  # an abandoned stream is noticed asynchronously
        snapshot = stats(client, view)
        assert snapshot["queue_depth"] == 0, snapshot
        assert snapshot["engine_slots"]["in_use"] == 0, snapshot
        assert name in snapshot["tenants"], snapshot
        for tenant, kinds in snapshot["tenants"].items():
            for kind, row in kinds.items():
                assert row["in_flight"] == 0, (tenant, kind, row)
                for priority in ("interactive", "batch"):
                    assert row[priority] == {"queued": 0, "running": 0}, (tenant, kind, row)


def in_flight(client: httpx.Client, tenant: str) -> int:
    return int(stats(client, project(tenant))["tenants"][tenant]["text"]["in_flight"])


def running(client: httpx.Client, tenant: str) -> int:
    """``tenant``'s text requests the gateway has admitted and is running (not queued)."""
    row = stats(client, project(tenant))["tenants"].get(tenant, {}).get("text")
    return 0 if row is None else int(row["interactive"]["running"] + row["batch"]["running"])


def generations(engine_url: str) -> int:
    """The llama.cpp calls running in the engine (its ``/api/ps``)."""
    resp = httpx.get(f"{engine_url}/api/ps", timeout=30)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["generations"])


@contextmanager
def holding(client: httpx.Client, engine_url: str, tenant: str) -> Iterator[None]:
    """A long streamed generation for ``tenant`` that holds the tenant's place until the block ends and the
    stream is closed (which cancels the generation). The block starts only once the gateway runs the request
    for ``tenant`` and the engine is generating it; it cannot end on its own (a thousand numbers to write)."""
    body = {
        "model": CHAT_MODEL,
        "messages": HOLD,
        "format": LONG,
        "stream": True,
        "options": {"num_predict": 3000, "temperature": 0},
    }
    with client.stream("POST", "/api/chat", json=body, headers=project(tenant)) as resp:
        assert resp.status_code == 200
        poll(lambda: running(client, tenant) == 1, f"{tenant}'s request running in the gateway")
        poll(lambda: generations(engine_url) >= 1, f"the engine generating {tenant}'s request", limit=60)
        assert in_flight(client, tenant) == 1
        yield
        assert running(client, tenant) == 1, "the held request was still running throughout the block"


def test_prompt_limit_is_counted_with_the_models_tokenizer(
    http: httpx.Client, admission_url: str, engine_url: str
) -> None:
    exact = httpx.post(f"{engine_url}/api/tokenize", json={"model": CHAT_MODEL, "messages": OVER}, timeout=60)
    assert exact.status_code == 200
    over_count = exact.json()["count"]
    assert over_count > PROMPT_LIMIT
    before = stats(http, project("limits"))["rejections"].get("prompt_too_large", 0)

    resp = http.post("/api/chat", json={"model": CHAT_MODEL, "messages": OVER}, headers=project("limits"))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["code"] == "prompt_too_large"
    assert "counted with the model's tokenizer" in body["error"]
    assert f"the limit is {PROMPT_LIMIT}" in body["error"]
    stated = re.search(r"the prompt is (\d+) tokens", body["error"])
    assert stated is not None and int(stated.group(1)) == over_count, "the engine's own count, template included"

    openai_client = openai.OpenAI(
        base_url=f"{admission_url}/v1", api_key="x", max_retries=0, default_headers=project("limits")
    )
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model=CHAT_MODEL, messages=OVER, max_tokens=4)  # type: ignore[arg-type]
    assert info.value.code == "prompt_too_large"
    assert stats(http, project("limits"))["rejections"]["prompt_too_large"] == before + 2

    under = http.post(
        "/api/chat",
        json={"model": CHAT_MODEL, "messages": UNDER, "stream": False, "options": {"num_predict": 4}},
        headers=project("limits"),
    )
    assert under.status_code == 200, under.text
    answer = under.json()
    assert answer["done"] is True
    assert 0 < answer["eval_count"] <= 4
    assert len((SENTENCE * 12).encode()) > PROMPT_LIMIT, "over the byte bound, so it was counted, not waved through"
    assert 100 < answer["prompt_eval_count"] <= PROMPT_LIMIT


def loaded_models(engine_url: str) -> set[str]:
    resp = httpx.get(f"{engine_url}/api/ps", timeout=30)
    assert resp.status_code == 200, resp.text
    return {str(m["model"]) for m in resp.json()["models"]}


async def check_with_engine(engine_url: str, body: JsonDict) -> None:
    """The gateway's prompt check alone, against the engine."""
    engine = EngineClient(engine_url, Settings())
    await engine.open()
    try:
        await check_prompt_size(engine, body, PROMPT_LIMIT, count_budget=60)
    finally:
        await engine.close()


def test_the_prompt_check_never_loads_a_model(http: httpx.Client, engine_url: str) -> None:
    """The check runs before admission: with the model not loaded, the engine's tokenizer is not used (it would
    load the model outside the caps and slots); the estimate decides."""
    httpx.post(f"{engine_url}/api/generate", json={"model": CHAT_MODEL, "keep_alive": 0}, timeout=60)
    poll(lambda: CHAT_MODEL not in loaded_models(engine_url), f"{CHAT_MODEL} unloaded")

    resp = http.post("/api/chat", json={"model": CHAT_MODEL, "messages": OVER}, headers=project("limits"))
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "prompt_too_large"
    assert "estimated" in resp.json()["error"]
    assert CHAT_MODEL not in loaded_models(engine_url), "refused by the prompt check without loading the model"

    count = {"model": CHAT_MODEL, "messages": UNDER, "load": False}
    refused = httpx.post(f"{engine_url}/api/tokenize", json=count, timeout=60)
    assert refused.status_code == 409, refused.text
    assert refused.json()["loaded"] is False
    # under the limit by the estimate, and over the cheap byte bound: the engine is asked, and answers "not loaded"
    asyncio.run(check_with_engine(engine_url, {"model": CHAT_MODEL, "messages": UNDER}))
    assert CHAT_MODEL not in loaded_models(engine_url), "admitted by the estimate, still not loaded"


def test_official_clients_see_the_tenant_cap(http: httpx.Client, admission_url: str, engine_url: str) -> None:
    ollama_client = ollama.Client(host=admission_url, headers=project(BUSY), timeout=120)
    openai_client = openai.OpenAI(
        base_url=f"{admission_url}/v1", api_key="x", max_retries=0, default_headers=project(BUSY), timeout=120
    )
    before = stats(http, project(BUSY))["rejections"].get("tenant_busy", 0)
    with holding(http, engine_url, BUSY):
        with pytest.raises(ollama.ResponseError) as refused:
            ollama_client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
        assert refused.value.status_code == 429
        assert f"'{BUSY}'" in refused.value.error and "in flight" in refused.value.error

        with pytest.raises(openai.RateLimitError) as limited:
            openai_client.chat.completions.create(model=CHAT_MODEL, messages=HI, max_tokens=4)  # type: ignore[arg-type]
        assert limited.value.status_code == 429
        assert limited.value.code == "tenant_busy"
        assert int(limited.value.response.headers["Retry-After"]) >= 1

        other = http.post(
            "/api/chat",
            json={"model": CHAT_MODEL, "messages": HI, "stream": False, "options": {"num_predict": 2}},
            headers=project("default"),
        )
        assert other.status_code == 200, "another tenant is not affected"
    assert stats(http, project(BUSY))["rejections"]["tenant_busy"] == before + 2

    # Closing the stream gives the place back (once the gateway notices): the tenant's next request is answered.
    until(lambda: in_flight(http, BUSY) == 0, "the abandoned stream's place given back")
    poll(lambda: generations(engine_url) == 0, "the abandoned generation stopped in the engine")
    answer = ollama_client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
    assert answer.done
    assert 0 < (answer.eval_count or 0) <= 4


def test_official_clients_send_keys(model_store: Path, artifacts_dir: Path, tmp_path: Path, engine_url: str) -> None:
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-keys-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_API_KEYS": "app:sk-app",
        },
    )
    try:
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-app", max_retries=0, timeout=120)
        completion = good.chat.completions.create(model=CHAT_MODEL, messages=HI, max_tokens=4)  # type: ignore[arg-type]
        assert completion.choices[0].message.role == "assistant"
        assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 4

        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as denied:
            wrong.chat.completions.create(model=CHAT_MODEL, messages=HI, max_tokens=4)  # type: ignore[arg-type]
        assert denied.value.status_code == 401
        assert denied.value.code == "unauthorized"

        keyed = ollama.Client(host=url, headers={"Authorization": "Bearer sk-app"}, timeout=120)
        answer = keyed.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
        assert answer.done and answer.message.content is not None
        with pytest.raises(ollama.ResponseError) as anonymous:
            ollama.Client(host=url, timeout=120).chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
        assert anonymous.value.status_code == 401

        with httpx.Client(base_url=url, timeout=60) as client:
            mine = stats(client, {"Authorization": "Bearer sk-app"})
            assert mine["auth"] == "on"
            assert mine["you"] == {"tenant": "app", "role": "user"}
            assert_drained(client, ("app",), headers={"Authorization": "Bearer sk-app"})
    finally:
        stop(proc)


def test_every_counter_is_back_at_zero(http: httpx.Client) -> None:
    """After all of the above (429s, a refused prompt, an abandoned stream): nothing queued, running or held."""
    assert_drained(http, USED_TENANTS)
    snapshot = stats(http)
    assert snapshot["shared_state"] == "local"
    assert snapshot["engine_slots"]["total"] == 2
