"""Budgets as buckets that refill continuously over their window, and the in-process store of them.

A rule allows ``limit`` units (requests or tokens) per ``period`` seconds. Its bucket holds at most ``limit``
units and refills at ``limit / period`` units per second, so over any window of ``period`` seconds a tenant
gets at most twice the limit at the very start (a full bucket plus its refill) and the limit from then on — a
rolling window without a boundary where the whole budget comes back at once. Taking units needs them all
there; the time until they are is what ``Retry-After`` says. Settling a reservation may take more than is
there (the engine counted more tokens than were reserved): the bucket then goes below zero, and the tenant
waits until it has refilled that debt.

Several charges (one per rule of a tenant) are taken together or not at all. A bucket that has refilled to full
is forgotten, so the stores keep only tenants that used part of their budget recently.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

_EPSILON = 1e-9
"""Units of slack in comparisons, for the refill's floating-point arithmetic."""
MAX_LOCAL_BUCKETS = 10_000
"""Buckets the in-process store keeps; past it the least recently used are forgotten (they count as full)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """``limit`` units per ``period`` seconds, under ``name`` (``requests``, ``tokens``, ``tokens_day``)."""

    name: str
    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period <= 0:
            raise ValueError(f"a quota needs a positive limit and period (got {self.limit} per {self.period} s)")

    @property
    def rate(self) -> float:
        """Units that come back per second."""
        return self.limit / self.period

    def refilled(self, level: float, elapsed: float) -> float:
        """The level ``elapsed`` seconds after it was ``level`` (never above the limit)."""
        return min(float(self.limit), level + max(0.0, elapsed) * self.rate)

    def wait(self, level: float, cost: float) -> float:
        """Seconds until a bucket at ``level`` holds ``cost`` units (0 when it does now)."""
        missing = cost - level
        return missing / self.rate if missing > _EPSILON else 0.0

    def until_full(self, level: float) -> float:
        """Seconds until a bucket at ``level`` is full again."""
        return max(0.0, (self.limit - level) / self.rate)


@dataclass(frozen=True, slots=True)
class Charge:
    """``cost`` units of ``rule`` (negative: units given back)."""

    rule: Rule
    cost: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a store did with charges: whether they were taken, and each bucket's level afterwards (for a refusal,
    the levels as they are: nothing was taken)."""

    taken: bool
    levels: tuple[float, ...]

    def retry_after(self, charges: Sequence[Charge]) -> float:
        """Seconds until every charge fits (0 when they were taken)."""
        if self.taken:
            return 0.0
        return max((c.rule.wait(level, c.cost) for c, level in zip(charges, self.levels, strict=True)), default=0.0)

    def refused_by(self, charges: Sequence[Charge]) -> list[Rule]:
        """The rules whose bucket did not hold its charge."""
        if self.taken:
            return []
        return [c.rule for c, level in zip(charges, self.levels, strict=True) if c.rule.wait(level, c.cost) > 0]


class BucketStore(Protocol):
    remote: bool
    """True when the buckets live in another process (a cancellation can interrupt a call)."""

    async def take(self, key: str, charges: Sequence[Charge]) -> Outcome:
        """Take every charge from ``key``'s buckets if all of them hold theirs now; else take nothing."""
        ...

    async def settle(self, key: str, charges: Sequence[Charge]) -> Outcome:
        """Apply every charge whatever the levels (a bucket may go below zero; one given units stays at most full)."""
        ...

    async def close(self) -> None: ...


class LocalBuckets:
    """Buckets in this process: the store of a single gateway (``redis_buckets`` shares them across replicas)."""

    remote = False

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_LOCAL_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._clock = clock
        self._max = max_buckets
        self._state: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        """(key, rule name) -> (level, when it was that level); a bucket absent is full."""

    def __len__(self) -> int:
        return len(self._state)

    async def take(self, key: str, charges: Sequence[Charge]) -> Outcome:
        return self._apply(key, charges, check=True)

    async def settle(self, key: str, charges: Sequence[Charge]) -> Outcome:
        return self._apply(key, charges, check=False)

    async def close(self) -> None:
        self._state.clear()

    def _apply(self, key: str, charges: Sequence[Charge], *, check: bool) -> Outcome:
        now = self._clock()
        levels = [self._level(key, c.rule, now) for c in charges]
        if check and any(c.rule.wait(level, c.cost) > 0 for c, level in zip(charges, levels, strict=True)):
            return Outcome(False, tuple(levels))
        after: list[float] = []
        for charge, level in zip(charges, levels, strict=True):
            rule = charge.rule
            left = min(float(rule.limit), level - charge.cost)
            bucket = (key, rule.name)
            if left >= rule.limit:
                self._state.pop(bucket, None)
            else:
                self._state[bucket] = (left, now)
                self._state.move_to_end(bucket)
            after.append(left)
        while len(self._state) > self._max:
            self._state.popitem(last=False)
        return Outcome(True, tuple(after))

    def _level(self, key: str, rule: Rule, now: float) -> float:
        saved = self._state.get((key, rule.name))
        if saved is None:
            return float(rule.limit)
        level, at = saved
        return rule.refilled(level, now - at)
