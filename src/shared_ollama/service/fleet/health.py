"""Each host's circuit breaker: ``up`` (closed), ``down`` (open) and ``probing`` (half-open).

``up``: requests go to the host. ``failure_threshold`` failures in a row (default 1: a host that refuses a
connection or fails a probe is taken out at once, since a request that fails to connect is retried on another
host anyway) open the breaker: ``down`` for ``backoff`` seconds, during which nothing is sent. Then
``allows_request()`` lets exactly one trial through (``probing``; the fleet monitor's health probe is that trial):
its success closes the breaker (and resets the backoff), its failure opens it again for twice the backoff, up to
``backoff_max``. A trial that never reports back frees the place after ``probe_timeout`` seconds, so a lost
trial cannot keep a host out for ever. A success reported in any state closes the breaker: the host answered.

Time comes from an injectable monotonic ``clock`` (backoffs) and ``wall`` clock (the ``last_change`` shown).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_ERROR_CHARS = 300
"""A recorded error is cut to this many characters."""


class BreakerState(StrEnum):
    UP = "up"
    DOWN = "down"
    PROBING = "probing"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 1
    """Failures in a row that take an ``up`` host out."""
    backoff: float = 1.0
    """Seconds a host stays ``down`` after it is first taken out."""
    backoff_max: float = 30.0
    """Longest stay ``down``: the backoff doubles after each failed trial, up to this."""
    probe_timeout: float = 30.0
    """Seconds a granted trial may take to report before another one is allowed."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0 < self.backoff <= self.backoff_max:
            raise ValueError("backoff must be > 0 and at most backoff_max")
        if self.probe_timeout <= 0:
            raise ValueError("probe_timeout must be > 0")


class CircuitBreaker:
    """One host's breaker and counters. Synchronous bookkeeping only; not shared between threads."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._wall = wall
        self.state = BreakerState.UP
        self.requests = 0
        """Outcomes of requests (not health probes) recorded."""
        self.failures = 0
        """Failed requests (not health probes)."""
        self.consecutive_failures = 0
        """Failures in a row, requests and probes alike."""
        self.last_error: str | None = None
        self.last_change = wall()
        """Wall-clock time (seconds since the epoch) of the last change of state."""
        self._backoff = self.policy.backoff
        self._reopen_at = 0.0
        self._trial_started = 0.0

    @property
    def available(self) -> bool:
        """Whether requests may be placed on the host (``up``); a question without side effects."""
        return self.state is BreakerState.UP

    @property
    def backoff(self) -> float:
        """The current stay ``down`` (doubled after each failed trial)."""
        return self._backoff

    def retry_in(self) -> float:
        """Seconds until a ``down`` host may be tried again (0 when it is not ``down``)."""
        if self.state is not BreakerState.DOWN:
            return 0.0
        return max(0.0, self._reopen_at - self._clock())

    def allows_request(self) -> bool:
        """Whether a request (or probe) may go to the host now. ``up``: yes. ``down`` once its backoff has passed:
        yes, to exactly one caller, and the breaker is ``probing`` until that trial reports. ``probing``: no,
        unless the trial has not reported within ``probe_timeout`` (then it is granted again)."""
        now = self._clock()
        if self.state is BreakerState.UP:
            return True
        if self.state is BreakerState.DOWN:
            if now < self._reopen_at:
                return False
            self._change(BreakerState.PROBING)
            self._trial_started = now
            return True
        if now - self._trial_started >= self.policy.probe_timeout:
            self._trial_started = now
            return True
        return False

    def record_success(self, *, probe: bool = False) -> None:
        """The host answered: the breaker closes and its backoff resets. ``probe``: a health probe, not counted
        among the requests."""
        if not probe:
            self.requests += 1
        self.consecutive_failures = 0
        self._backoff = self.policy.backoff
        if self.state is not BreakerState.UP:
            self._change(BreakerState.UP)

    def record_failure(self, error: str, *, probe: bool = False) -> None:
        """The host failed (could not connect, timed out, a 5xx, a bad answer). ``probe``: a health probe, not
        counted among the requests and failures."""
        if not probe:
            self.requests += 1
            self.failures += 1
        self.consecutive_failures += 1
        self.last_error = error[:MAX_ERROR_CHARS]
        if self.state is BreakerState.PROBING:
            self._backoff = min(self._backoff * 2, self.policy.backoff_max)
            self._open()
        elif self.state is BreakerState.UP and self.consecutive_failures >= self.policy.failure_threshold:
            self._open()
        # down: an outcome of a request sent before the breaker opened; the backoff already runs

    def _open(self) -> None:
        self._reopen_at = self._clock() + self._backoff
        self._change(BreakerState.DOWN)

    def _change(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.last_change = self._wall()

    def snapshot(self) -> dict[str, Any]:
        """The breaker as ``GET /api/v1/engines`` shows it."""
        return {
            "state": self.state.value,
            "requests": self.requests,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_change": self.last_change,
            "retry_in_seconds": round(self.retry_in(), 3),
        }
