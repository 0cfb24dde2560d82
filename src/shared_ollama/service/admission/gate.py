"""Admission: a tenant's in-flight cap, then a place in the fair queue, then an engine slot, with deadlines.

``Admission.admit`` is the one gate every engine request passes. In order:

1. the tenant's in-flight cap for the request's kind (text / vision): over it, ``429 tenant_busy``; then,
   when the request names its end user and the tenant has a per-user cap, the user's (``429 user_busy``);
2. the shared bounded queue (``scheduler.py``): full, ``503 queue_full``; no slot within the tenant's
   waiting deadline, ``503 request_timeout``;
3. while the request runs, its total time is bounded by the same deadline, counted from arrival.

Whatever happens (completion, error, timeout, cancellation) the place and the slot are given back exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from shared_ollama.errors import SharedOllamaError, TenantBusy, UserBusy
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.inflight import InflightCounter
from shared_ollama.service.admission.scheduler import Scheduler, Ticket
from shared_ollama.service.admission.stats import RecentTimes

JsonDict = dict[str, Any]
log = logging.getLogger(__name__)
TENANT_HEADER = "X-Shared-Ollama-Tenant"
LIMIT_HEADER = "X-Shared-Ollama-Inflight-Limit"
REMAINING_HEADER = "X-Shared-Ollama-Inflight-Remaining"
WAIT_HEADER = "X-Shared-Ollama-Queue-Wait-Ms"


@dataclass(frozen=True, slots=True)
class Admitted:
    ticket: Ticket
    deadline: float
    """Monotonic time by which the request must be done (arrival + the tenant's deadline for its kind)."""
    clock: Callable[[], float]

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.clock())


class Admission:
    def __init__(
        self, scheduler: Scheduler, counter: InflightCounter, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.scheduler = scheduler
        self.counter = counter
        self.rejections: Counter[str] = Counter()
        self._clock = clock
        self._prefix = uuid.uuid4().hex[:12]  # places are unique across replicas sharing Redis
        self._next = itertools.count(1).__next__
        self._releasing: set[asyncio.Task[None]] = set()

    def record_rejection(self, code: str) -> None:
        self.rejections[code] += 1

    @asynccontextmanager
    async def admit(self, ctx: RequestContext, model: str, kind: str) -> AsyncIterator[Admitted]:
        tenant = ctx.tenant
        cap = tenant.limits.cap(kind)
        key = f"{tenant.name}:{kind}"
        member = f"{self._prefix}-{self._next()}"
        arrived = self._clock()
        ctx.headers[TENANT_HEADER] = tenant.name
        ctx.headers[LIMIT_HEADER] = str(cap)
        try:
            acquired = await self.counter.acquire(key, member, cap)
        except asyncio.CancelledError:  # the place may have been taken just before the cancellation
            self._release_later(key, member)
            raise
        if not acquired:
            raise self._busy(ctx, kind, cap)
        try:
            ctx.headers[REMAINING_HEADER] = str(max(0, cap - await self.counter.count(key)))
            async with self._user_place(ctx, member):
                user = ctx.record.user
                ticket = Ticket(
                    tenant=tenant.name, model=model, priority=ctx.priority, kind=kind, user=user, pin=ctx.engine_host
                )
                max_wait = tenant.limits.queue_timeout(kind)
                await self.scheduler.acquire(ticket, max_wait)
                try:
                    ctx.headers[WAIT_HEADER] = str(round(ticket.waited * 1000))
                    yield Admitted(ticket, arrived + max_wait, self._clock)
                finally:
                    self.scheduler.release(ticket)
        finally:
            await self._release(key, member)

    @asynccontextmanager
    async def _user_place(self, ctx: RequestContext, member: str) -> AsyncIterator[None]:
        """The end user's place under the tenant's per-user cap (nothing to take without a user or a cap)."""
        cap = ctx.tenant.limits.max_inflight_per_user
        user = ctx.record.user
        if not cap or user is None:
            yield
            return
        key = f"{ctx.tenant.name}:user:{user}"
        try:
            acquired = await self.counter.acquire(key, member, cap)
        except asyncio.CancelledError:
            self._release_later(key, member)
            raise
        if not acquired:
            raise UserBusy(
                f"user '{user}' of tenant '{ctx.tenant.name}' already has {cap} requests in flight (the per-user "
                "cap); retry later",
                retry_after=self.scheduler.service_times.median(default=1.0),
            )
        try:
            yield
        finally:
            await self._release(key, member)

    async def _release(self, key: str, member: str) -> None:
        """Give a place back even when this task is being cancelled (a client hanging up on a stream): the
        release runs in a task of its own that the cancellation cannot interrupt. A failed release is logged,
        not raised: a shared place then expires with its lease."""
        if not self.counter.remote:  # nothing to wait for, so nothing a cancellation could interrupt
            await self.counter.release(key, member)
            return
        task = self._release_later(key, member)
        with contextlib.suppress(SharedOllamaError):  # logged by _released
            await asyncio.shield(task)

    def _release_later(self, key: str, member: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self.counter.release(key, member))
        self._releasing.add(task)
        task.add_done_callback(self._released)
        return task

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("releasing an in-flight place failed: %s", task.exception())

    async def precheck(self, ctx: RequestContext, kind: str) -> None:
        """Refuse early a request whose tenant is already at its cap (before costly work such as decoding
        images); ``admit`` still decides for real."""
        cap = ctx.tenant.limits.cap(kind)
        if await self.counter.count(f"{ctx.tenant.name}:{kind}") >= cap:
            raise self._busy(ctx, kind, cap)

    def _busy(self, ctx: RequestContext, kind: str, cap: int) -> TenantBusy:
        ctx.headers[TENANT_HEADER] = ctx.tenant.name
        ctx.headers[LIMIT_HEADER] = str(cap)
        ctx.headers[REMAINING_HEADER] = "0"
        return TenantBusy(
            f"tenant '{ctx.tenant.name}' already has {cap} {kind} requests in flight (its cap); retry later",
            retry_after=self.scheduler.service_times.median(default=1.0),
        )

    async def in_flight(self, tenant: str, kind: str) -> int:
        return await self.counter.count(f"{tenant}:{kind}")

    async def snapshot(self, tenants: Iterable[str], *, everyone: bool, shared: bool = False) -> JsonDict:
        """Queue and slot state for ``/api/v1/queue/stats``: per-tenant rows for ``tenants``, and for every
        tenant with requests here too when ``everyone`` (an admin's view)."""
        sched = self.scheduler
        queued, running = sched.queued_by(), sched.running_by()
        names = set(tenants)
        if everyone:
            names |= {k[0] for k in (*queued, *running)}
        per_tenant: JsonDict = {}
        for name in sorted(names):
            kinds: JsonDict = {}
            for kind in ("text", "vision"):
                row = {
                    priority: {
                        "queued": queued.get((name, kind, priority), 0),
                        "running": running.get((name, kind, priority), 0),
                    }
                    for priority in ("interactive", "batch")
                }
                row["in_flight"] = await self.in_flight(name, kind)  # every replica's, when shared
                kinds[kind] = row
            per_tenant[name] = kinds
        by_class = {
            priority: {
                "queued": sum(v for k, v in queued.items() if k[2] == priority),
                "running": sum(v for k, v in running.items() if k[2] == priority),
            }
            for priority in ("interactive", "batch")
        }
        return {
            "queue_depth": sched.queued,
            "max_queue": sched.max_queue,
            "engine_slots": {"total": sched.slots, "in_use": sched.running},
            "by_class": by_class,
            "tenants": per_tenant,
            "wait_seconds": _percentiles(sched.waits),
            "service_seconds": _percentiles(sched.service_times),
            "rejections": dict(sorted(self.rejections.items())),
            "shared_state": "redis" if shared else "local",
        }


def _percentiles(times: RecentTimes) -> JsonDict:
    return {
        "p50": round(times.percentile(50), 4),
        "p95": round(times.percentile(95), 4),
        "samples": len(times),
    }


def is_rejection(exc: SharedOllamaError) -> bool:
    """Errors that turn a request away (counted by code in the queue stats)."""
    return exc.status in (400, 401, 403, 413, 429) or exc.code in ("queue_full", "request_timeout")
