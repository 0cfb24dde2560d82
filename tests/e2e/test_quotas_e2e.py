"""Quotas and usage with the real engine and models, through the official ``ollama`` and ``openai`` clients: the
requests-per-minute and tokens-per-minute limits answer ``429 rate_limited`` with Retry-After from the window and
the rate-limit headers (OpenAI's included), a refused request takes no place; tokens are settled from the engine's
own counts; and ``/api/v1/usage`` sums exactly what the answers counted (``prompt_eval_count``, ``eval_count``,
``total_duration``).

One gateway in front of the session's engine; every test has tenants of its own (keys in a tenants file), so their
budgets never mix. Generations are a few tokens long.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2:135m"
HI = [{"role": "user", "content": "Hi"}]
RATE = "X-Shared-Ollama-RateLimit-"
DAY = 8640  # tokens per day: 0.1 token per second comes back, so a settled figure is exact within a request
TENANTS = f"""
tenants:
  - {{name: rpm, keys: [key-rpm], limits: {{requests_per_minute: 2}}}}
  - {{name: rpm-openai, keys: [key-rpm-openai], limits: {{requests_per_minute: 2}}}}
  - {{name: tpm, keys: [key-tpm], limits: {{tokens_per_minute: 60}}}}
  - {{name: day, keys: [key-day], limits: {{tokens_per_day: {DAY}}}}}
  - {{name: usage, keys: [key-usage]}}
  - {{name: usage-openai, keys: [key-usage-openai]}}
  - {{name: ops, role: admin, keys: [key-ops]}}
"""
JsonDict = dict[str, Any]


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{name}"}


@pytest.fixture(scope="module")
def quotas_url(
    engine_url: str, model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    data = tmp_path_factory.mktemp("gw-quotas")
    tenants = data / "tenants.yaml"
    tenants.write_text(TENANTS)
    url, proc = start_gateway(
        model_store,
        data,
        artifacts_dir / "gateway-quotas-e2e.log",
        env={
            "SHARED_OLLAMA_ENGINE": "external",
            "SHARED_OLLAMA_OLLAMA_URL": engine_url,
            "SHARED_OLLAMA_TENANTS_FILE": str(tenants),
        },
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(quotas_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=quotas_url, timeout=120) as client:
        yield client


def ollama_client(url: str, tenant: str) -> ollama.Client:
    return ollama.Client(host=url, headers=key(tenant), timeout=120)


def openai_client(url: str, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=f"key-{tenant}", max_retries=0, timeout=120)


def queue(http: httpx.Client, tenant: str) -> JsonDict:
    resp = http.get("/api/v1/queue/stats", headers=key(tenant))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_requests_per_minute_with_the_ollama_client(http: httpx.Client, quotas_url: str) -> None:
    client = ollama_client(quotas_url, "rpm")
    for _ in range(2):
        answer = client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
        assert answer.done and answer.eval_count
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 4})
    assert refused.value.status_code == 429
    assert "'rpm'" in refused.value.error and "2 requests per minute" in refused.value.error

    raw = http.post("/api/chat", json={"model": CHAT_MODEL, "messages": HI, "stream": False}, headers=key("rpm"))
    assert raw.status_code == 429
    body = raw.json()
    assert body["code"] == "rate_limited"
    assert 0 < body["retry_after"] <= 30, "2 per minute: one request comes back within 30 s"
    assert int(raw.headers["Retry-After"]) == -int(-body["retry_after"] // 1), "the field, rounded up"
    assert raw.headers[f"{RATE}Limit-Requests"] == "2"
    assert raw.headers[f"{RATE}Remaining-Requests"] == "0"
    assert 0 < int(raw.headers[f"{RATE}Reset"]) <= 60
    snapshot = queue(http, "rpm")
    assert snapshot["tenants"]["rpm"]["text"]["in_flight"] == 0, "the refused requests hold no place"
    assert snapshot["queue_depth"] == 0 and snapshot["engine_slots"]["in_use"] == 0
    assert snapshot["rejections"]["rate_limited"] >= 2


def test_requests_per_minute_with_the_openai_client(quotas_url: str) -> None:
    client = openai_client(quotas_url, "rpm-openai")
    for remaining in ("1", "0"):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT_MODEL,
            messages=HI,  # type: ignore[arg-type]
            max_tokens=4,
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == remaining
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        assert raw.parse().usage.completion_tokens > 0
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=CHAT_MODEL, messages=HI, max_tokens=4)  # type: ignore[arg-type]
    error = refused.value
    assert error.status_code == 429
    assert error.code == "rate_limited" and error.type == "rate_limit_error"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(error.response.headers["retry-after"]) <= 30


def test_tokens_per_minute_settled_from_the_engine_counts(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": HI, "stream": False, "options": {"num_predict": 8}}
    first = http.post("/api/chat", json=body, headers=key("tpm"))
    assert first.status_code == 200, first.text
    used = first.json()["prompt_eval_count"] + first.json()["eval_count"]
    assert used > 20, "the template's system prompt and the answer, as the engine counted them"
    assert first.headers[f"{RATE}Limit-Tokens"] == "60"
    assert first.headers["x-ratelimit-limit-tokens"] == "60"
    remaining = int(first.headers[f"{RATE}Remaining-Tokens"])
    assert remaining < 60 - 17, "settled with the engine's count, more than the estimate of 17"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(remaining)

    # A request that may generate 200 tokens needs the whole minute's budget, which the first one used part of.
    big = {**body, "options": {"num_predict": 200}}
    refused = http.post("/api/chat", json=big, headers=key("tpm"))
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert "60 tokens per minute" in refused.json()["error"]
    retry_after = refused.json()["retry_after"]
    assert 0 < retry_after <= 60, "the missing tokens come back at one per second"
    assert refused.headers["Retry-After"] == str(-int(-retry_after // 1))
    assert int(refused.headers[f"{RATE}Remaining-Tokens"]) < 60
    assert queue(http, "tpm")["tenants"]["tpm"]["text"]["in_flight"] == 0


def test_a_day_budget_reports_exactly_what_the_engine_counted(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": HI, "stream": False, "options": {"num_predict": 6}}
    answers = []
    for _ in range(2):
        resp = http.post("/api/chat", json=body, headers=key("day"))
        assert resp.status_code == 200, resp.text
        answers.append(resp)
    used = [a.json()["prompt_eval_count"] + a.json()["eval_count"] for a in answers]
    assert answers[0].headers[f"{RATE}Remaining-Tokens"] == str(DAY - used[0])
    assert answers[1].headers[f"{RATE}Remaining-Tokens"] == str(DAY - used[0] - used[1])
    assert answers[1].headers[f"{RATE}Remaining-Tokens-Day"] == str(DAY - sum(used))


def test_usage_totals_equal_the_answers_counts(http: httpx.Client, quotas_url: str) -> None:
    native = ollama_client(quotas_url, "usage")
    counted: list[tuple[int, int, int]] = []  # prompt, completion, engine nanoseconds
    chat = native.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 5})
    counted.append((chat.prompt_eval_count or 0, chat.eval_count or 0, chat.total_duration or 0))
    final = None
    for part in native.chat(model=CHAT_MODEL, messages=HI, options={"num_predict": 6}, stream=True):
        final = part
    assert final is not None and final.done
    counted.append((final.prompt_eval_count or 0, final.eval_count or 0, final.total_duration or 0))
    gen = native.generate(model=CHAT_MODEL, prompt="Say yes.", options={"num_predict": 4})
    counted.append((gen.prompt_eval_count or 0, gen.eval_count or 0, gen.total_duration or 0))
    assert all(p > 0 and c > 0 and ns > 0 for p, c, ns in counted)

    compat = openai_client(quotas_url, "usage-openai")
    openai_tokens = [0, 0]
    for n in (3, 5):
        done = compat.chat.completions.create(model=CHAT_MODEL, messages=HI, max_tokens=n)  # type: ignore[arg-type]
        assert done.usage is not None
        openai_tokens[0] += done.usage.prompt_tokens
        openai_tokens[1] += done.usage.completion_tokens

    own = http.get("/api/v1/usage", params={"window": "1h"}, headers=key("usage"))
    assert own.status_code == 200, own.text
    prompt, completion = sum(c[0] for c in counted), sum(c[1] for c in counted)
    [row] = own.json()["rows"]
    assert row["tenant"] == "usage"
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (3, prompt, completion)
    assert row["total_tokens"] == prompt + completion
    assert row["engine_seconds"] == pytest.approx(sum(c[2] for c in counted) / 1e9, abs=0.002)
    assert http.get("/api/v1/usage", params={"tenant": "ops"}, headers=key("usage")).status_code == 403

    everyone = http.get("/api/v1/usage", params={"window": "1h", "group_by": "tenant,model"}, headers=key("ops"))
    rows = {(r["tenant"], r["model"]): r for r in everyone.json()["rows"]}
    assert rows[("usage", CHAT_MODEL)]["total_tokens"] == prompt + completion
    other = rows[("usage-openai", CHAT_MODEL)]
    assert (other["requests"], other["prompt_tokens"], other["completion_tokens"]) == (2, *openai_tokens)
    per_hour = http.get("/api/v1/usage", params={"tenant": "usage", "bucket": "hour"}, headers=key("ops")).json()
    assert sum(r["total_tokens"] for r in per_hour["rows"]) == prompt + completion
