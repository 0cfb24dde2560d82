"""Per-tenant quotas on the request path: reserve before the call, settle after it, say where the tenant stands.

``Quotas.reserve`` is entered after the request's checks (prompt size, engine policy) and before the cache,
the queue and the engine. It takes one request and an estimate of the tokens (the prompt's bytes at
``BYTES_PER_TOKEN_ESTIMATE``, plus the output cap ``num_predict``) from every rule of the tenant at once; when a
bucket does not hold its share, nothing is taken and the request is refused with ``429 rate_limited`` and a
``Retry-After`` of the time until it would. When the request ends, the reservation is settled from its record:

- it ran on the engine: one request and the engine's own counts (``prompt_eval_count + eval_count``); without
  counts (a stream cut off, an engine failure) the estimate stands;
- a cache answered it: one request, no tokens;
- it never reached the engine (queue full, tenant at its cap, a deadline in the queue): nothing.

Every answer to a tenant with quotas carries the rate-limit headers (ours and the ones OpenAI's clients read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from shared_ollama.errors import RateLimited, SharedOllamaError
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.prompts import BYTES_PER_TOKEN_ESTIMATE
from shared_ollama.service.admission.tenants import Limits
from shared_ollama.service.quotas.buckets import BucketStore, Charge, Outcome, Rule

log = logging.getLogger(__name__)
JsonDict = dict[str, Any]

REQUESTS, TOKENS, TOKENS_DAY = "requests", "tokens", "tokens_day"
PER_MESSAGE_TOKENS = 4
"""Tokens the estimate adds per message for the chat template's markers."""
_HIT = ("hit", "semantic-hit")
_PREFIX = "X-Shared-Ollama-RateLimit-"


def rules_of(limits: Limits) -> tuple[Rule, ...]:
    """The tenant's quotas in force (a limit unset or 0 is none)."""
    wanted = (
        (REQUESTS, limits.requests_per_minute, 60.0),
        (TOKENS, limits.tokens_per_minute, 60.0),
        (TOKENS_DAY, limits.tokens_per_day, 86400.0),
    )
    return tuple(Rule(name, limit, period) for name, limit, period in wanted if limit)


def estimate_tokens(path: str, body: JsonDict) -> int:
    """What a request will cost at most, as far as can be told before the engine counts: its prompt's text at
    the conservative bytes-per-token estimate (template markers included) plus the output it may generate."""
    texts: list[str] = [v for v in (body.get("system"), body.get("prompt"), body.get("suffix")) if isinstance(v, str)]
    messages = body.get("messages")
    count = 1
    if isinstance(messages, list):
        count += len(messages)
        texts += [m["content"] for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:  # the template renders the tools' schemas into the prompt
        texts.append(orjson.dumps(tools).decode())
    inputs = body.get("input")
    if isinstance(inputs, str):
        texts.append(inputs)
    elif isinstance(inputs, list):
        texts += [t for t in inputs if isinstance(t, str)]
        count += len(inputs)
    size = sum(len(t.encode()) for t in texts)
    tokens = math.ceil(size / BYTES_PER_TOKEN_ESTIMATE) + PER_MESSAGE_TOKENS * count
    options = body.get("options")
    predict = options.get("num_predict") if isinstance(options, dict) else None
    if path != "/api/embed" and isinstance(predict, int) and not isinstance(predict, bool) and predict > 0:
        tokens += predict
    return tokens


class Reservation:
    """What one request took: one charge per rule of its tenant."""

    __slots__ = ("charges", "tenant")

    def __init__(self, tenant: str, charges: tuple[Charge, ...]) -> None:
        self.tenant = tenant
        self.charges = charges

    def final(self, ctx: RequestContext) -> tuple[Charge, ...]:
        """What the request costs now that it is over, as charges against what was taken (differences)."""
        record = ctx.record
        served = record.engine or record.cache in _HIT
        counted = record.prompt_tokens + record.completion_tokens
        out: list[Charge] = []
        for charge in self.charges:
            if charge.rule.name == REQUESTS:
                cost = 1.0 if served else 0.0
            elif record.engine:
                cost = float(counted) if counted else charge.cost
            else:
                cost = 0.0
            if cost != charge.cost:
                out.append(Charge(charge.rule, cost - charge.cost))
        return tuple(out)


class Quotas:
    """The tenants' quotas over one bucket store (in process, or Redis shared by replicas)."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store
        self._settling: set[asyncio.Task[Outcome]] = set()

    @asynccontextmanager
    async def reserve(self, ctx: RequestContext, path: str, body: JsonDict) -> AsyncIterator[None]:
        """Hold the request's share of its tenant's quotas while the block runs (``429 rate_limited`` when it does
        not fit), then settle it from the request's record. A tenant without quotas costs nothing here."""
        rules = rules_of(ctx.tenant.limits)
        if not rules:
            yield
            return
        estimate = estimate_tokens(path, body)
        # A request bigger than a whole budget waits for a full bucket, then leaves it in debt.
        charges = tuple(Charge(r, 1.0 if r.name == REQUESTS else float(min(estimate, r.limit))) for r in rules)
        outcome = await self.store.take(ctx.tenant.name, charges)
        write_headers(ctx.headers, charges, outcome)
        if not outcome.taken:
            raise _refusal(ctx.tenant.name, charges, outcome)
        reservation = Reservation(ctx.tenant.name, charges)
        try:
            yield
        finally:
            await self._settle(ctx, reservation)

    async def _settle(self, ctx: RequestContext, reservation: Reservation) -> None:
        """Apply the difference between what was reserved and what the request cost. Never raises a store failure
        (logged; the reservation then stands); runs to its end even when the request is being cancelled."""
        charges = reservation.final(ctx)
        if not charges:
            return
        if not self.store.remote:  # nothing to wait for, so nothing a cancellation could interrupt
            outcome = await self.store.settle(reservation.tenant, charges)
        else:
            task = asyncio.ensure_future(self.store.settle(reservation.tenant, charges))
            self._settling.add(task)
            task.add_done_callback(self._settled)
            try:
                outcome = await asyncio.shield(task)
            except SharedOllamaError:
                return  # logged by _settled
        everything = {c.rule.name: c for c in reservation.charges}
        levels = dict(zip((c.rule.name for c in charges), outcome.levels, strict=True))
        write_headers(ctx.headers, tuple(everything.values()), None, levels)

    def _settled(self, task: asyncio.Task[Outcome]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("settling a quota reservation failed (the estimate stands): %s", task.exception())

    async def close(self) -> None:
        """Let settlements under way finish, then close the store."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        with contextlib.suppress(SharedOllamaError):
            await self.store.close()


def _refusal(tenant: str, charges: Sequence[Charge], outcome: Outcome) -> RateLimited:
    wait = outcome.retry_after(charges)
    names = {REQUESTS: "requests per minute", TOKENS: "tokens per minute", TOKENS_DAY: "tokens per day"}
    over = ", ".join(f"{r.limit} {names.get(r.name, r.name)}" for r in outcome.refused_by(charges))
    return RateLimited(
        f"tenant '{tenant}' is over its quota ({over}); retry in {math.ceil(wait)} s",
        retry_after=round(max(wait, 0.001), 3),
    )


def write_headers(
    headers: dict[str, str],
    charges: Sequence[Charge],
    outcome: Outcome | None,
    levels: dict[str, float] | None = None,
) -> None:
    """Where the tenant stands: ``X-Shared-Ollama-RateLimit-*`` and OpenAI's ``x-ratelimit-*``. Levels come
    from ``outcome`` (one per charge) and ``levels`` (by rule name; a rule in neither is left as it was)."""
    known = dict(zip((c.rule.name for c in charges), outcome.levels, strict=True)) if outcome is not None else {}
    known.update(levels or {})
    rules = {c.rule.name: c.rule for c in charges}
    resets: list[float] = []
    requests = rules.get(REQUESTS)
    if requests is not None and REQUESTS in known:
        level = known[REQUESTS]
        resets.append(requests.until_full(level))
        _pair(headers, "Requests", requests.limit, level, requests.until_full(level))
    tokens = rules.get(TOKENS) or rules.get(TOKENS_DAY)
    if tokens is not None and tokens.name in known:
        level = known[tokens.name]
        resets.append(tokens.until_full(level))
        _pair(headers, "Tokens", tokens.limit, level, tokens.until_full(level))
    day = rules.get(TOKENS_DAY)
    if day is not None and TOKENS_DAY in known:
        resets.append(day.until_full(known[TOKENS_DAY]))
        headers[f"{_PREFIX}Limit-Tokens-Day"] = str(day.limit)
        headers[f"{_PREFIX}Remaining-Tokens-Day"] = str(_remaining(known[TOKENS_DAY]))
    if resets:
        headers[f"{_PREFIX}Reset"] = str(math.ceil(max(resets)))


def _pair(headers: dict[str, str], what: str, limit: int, level: float, reset: float) -> None:
    remaining = str(_remaining(level))
    headers[f"{_PREFIX}Limit-{what}"] = str(limit)
    headers[f"{_PREFIX}Remaining-{what}"] = remaining
    lower = what.lower()
    headers[f"x-ratelimit-limit-{lower}"] = str(limit)
    headers[f"x-ratelimit-remaining-{lower}"] = remaining
    headers[f"x-ratelimit-reset-{lower}"] = duration(reset)


def _remaining(level: float) -> int:
    return max(0, math.floor(level + 1e-9))


def duration(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it (Go's notation): ``20ms``, ``1.5s``,
    ``6m0s``, ``1h2m3s``."""
    millis = math.ceil(max(0.0, seconds) * 1000)
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{rest / 1000:g}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text
