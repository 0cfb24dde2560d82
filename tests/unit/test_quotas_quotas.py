"""Quotas on the request path, with the in-process store and a fake clock: the estimate, the reservation and its
settlement from the request's record, the refusal, and the rate-limit headers."""

from __future__ import annotations

import pytest

from shared_ollama.errors import BackendUnavailable, RateLimited
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.tenants import Limits, Role, Tenant
from shared_ollama.service.quotas.buckets import LocalBuckets, Outcome
from shared_ollama.service.quotas.quotas import Quotas, duration, estimate_tokens, rules_of

CHAT = {"model": "m", "messages": [{"role": "user", "content": "x" * 30}], "options": {"num_predict": 50}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limits(rpm: int | None = None, tpm: int | None = None, tpd: int | None = None) -> Limits:
    return Limits(6, 3, 4096, 120.0, 150.0, requests_per_minute=rpm, tokens_per_minute=tpm, tokens_per_day=tpd)


def context(lim: Limits, name: str = "t") -> RequestContext:
    return RequestContext(request_id="r", surface="ollama", tenant=Tenant(name, Role.USER, lim))


def ran(ctx: RequestContext, prompt: int, completion: int) -> None:
    ctx.record.engine = True
    ctx.record.prompt_tokens, ctx.record.completion_tokens = prompt, completion


async def test_no_limits_no_rules_no_headers() -> None:
    assert rules_of(limits()) == ()
    assert rules_of(limits(rpm=0, tpm=0, tpd=0)) == (), "0 is unlimited"
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits())
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ran(ctx, 10, 10)
    assert ctx.headers == {}


def test_the_estimate_covers_prompt_template_and_output() -> None:
    # 30 bytes at 3 bytes per token, 4 per message for the prompt and the one message, and num_predict
    assert estimate_tokens("/api/chat", CHAT) == 10 + 8 + 50
    assert estimate_tokens("/api/generate", {"prompt": "abcdef", "system": "abc"}) == 3 + 4
    assert estimate_tokens("/api/embed", {"input": ["abc", "abc"], "options": {"num_predict": 9}}) == 2 + 12
    assert estimate_tokens("/api/chat", {"messages": [], "options": {"num_predict": -1}}) == 4
    with_tools = {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert estimate_tokens("/api/chat", with_tools) > 4


async def test_over_the_request_limit_is_rate_limited_with_headers_and_nothing_taken() -> None:
    clock = Clock()
    quotas = Quotas(LocalBuckets(clock=clock))
    for expected in ("1", "0"):
        ctx = context(limits(rpm=2))
        async with quotas.reserve(ctx, "/api/chat", CHAT):
            ran(ctx, 3, 4)
        assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == expected
    ctx = context(limits(rpm=2))
    with pytest.raises(RateLimited) as refused:
        async with quotas.reserve(ctx, "/api/chat", CHAT):
            raise AssertionError("a refused request must not run")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.retry_after == pytest.approx(30.0)
    assert "'t'" in refused.value.message and "2 requests per minute" in refused.value.message
    assert ctx.headers["X-Shared-Ollama-RateLimit-Limit-Requests"] == "2"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == "0"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Reset"] == "60"
    assert ctx.headers["x-ratelimit-limit-requests"] == "2"
    assert ctx.headers["x-ratelimit-remaining-requests"] == "0"
    assert ctx.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert "X-Shared-Ollama-RateLimit-Limit-Tokens" not in ctx.headers
    clock.now += 30.0
    async with quotas.reserve(context(limits(rpm=2)), "/api/chat", CHAT):
        pass


async def test_tokens_are_reserved_then_settled_from_the_engine_counts() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(tpm=1000, tpd=5000))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == str(1000 - 68), "the estimate"
        ran(ctx, 20, 7)
    assert ctx.headers["X-Shared-Ollama-RateLimit-Limit-Tokens"] == "1000"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "973", "27 counted by the engine"
    assert ctx.headers["x-ratelimit-remaining-tokens"] == "973"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Limit-Tokens-Day"] == "5000"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens-Day"] == "4973"
    assert "x-ratelimit-limit-requests" not in ctx.headers


async def test_the_day_limit_alone_is_the_token_limit() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(tpd=500))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ran(ctx, 50, 50)
    assert ctx.headers["X-Shared-Ollama-RateLimit-Limit-Tokens"] == "500"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "400"
    assert ctx.headers["x-ratelimit-reset-tokens"] == duration(100 / (500 / 86400))


async def test_more_tokens_than_reserved_leave_debt_and_the_next_request_waits() -> None:
    clock = Clock()
    quotas = Quotas(LocalBuckets(clock=clock))
    ctx = context(limits(tpm=100))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ran(ctx, 100, 50)  # 150 counted against 68 reserved
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "0"
    with pytest.raises(RateLimited) as refused:
        async with quotas.reserve(context(limits(tpm=100)), "/api/chat", CHAT):
            pass
    assert refused.value.retry_after == pytest.approx((50 + 68) * 0.6), "debt of 50, then 68 for this request"
    assert "100 tokens per minute" in refused.value.message


async def test_a_request_bigger_than_the_budget_runs_on_a_full_bucket() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(tpm=30))
    async with quotas.reserve(ctx, "/api/chat", CHAT):  # estimated 68 > 30: reserves the whole 30
        assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "0"


async def test_a_cache_hit_costs_a_request_and_no_tokens() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(rpm=5, tpm=1000))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ctx.record.cache = "hit"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == "4"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "1000"


async def test_a_request_that_never_reached_the_engine_costs_nothing() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(rpm=1, tpm=1000))
    with pytest.raises(BackendUnavailable):
        async with quotas.reserve(ctx, "/api/chat", CHAT):
            raise BackendUnavailable("queue full or the like, before the engine")
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Requests"] == "1"
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == "1000"
    async with quotas.reserve(context(limits(rpm=1)), "/api/chat", CHAT):
        pass


async def test_an_engine_run_without_counts_keeps_the_estimate() -> None:
    quotas = Quotas(LocalBuckets(clock=Clock()))
    ctx = context(limits(tpm=1000))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ctx.record.engine = True  # a stream cut off before its final counts
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == str(1000 - 68)


async def test_a_failing_store_refuses_with_503_and_a_failed_settlement_is_not_raised() -> None:
    class Broken(LocalBuckets):
        remote = True
        fail_take = False

        async def take(self, key: str, charges: object) -> Outcome:
            if self.fail_take:
                raise BackendUnavailable("redis down")
            return await super().take(key, charges)  # type: ignore[arg-type]

        async def settle(self, key: str, charges: object) -> Outcome:
            raise BackendUnavailable("redis down")

    store = Broken(clock=Clock())
    quotas = Quotas(store)
    ctx = context(limits(tpm=1000))
    async with quotas.reserve(ctx, "/api/chat", CHAT):
        ran(ctx, 1, 1)
    assert ctx.headers["X-Shared-Ollama-RateLimit-Remaining-Tokens"] == str(1000 - 68), "the estimate stands"
    store.fail_take = True
    with pytest.raises(BackendUnavailable):
        async with quotas.reserve(context(limits(tpm=1000)), "/api/chat", CHAT):
            pass
    await quotas.close()


def test_durations_as_openai_writes_them() -> None:
    assert duration(0.0201) == "21ms"
    assert duration(0) == "0ms"
    assert duration(1.5) == "1.5s"
    assert duration(30) == "30s"
    assert duration(360) == "6m0s"
    assert duration(3723.25) == "1h2m3.25s"
