"""When to try a request again: the wait before each retry, and the total time budget (pure; clock and random
source injected).

A refusal that says when to come back (429/503 with ``Retry-After``) is retried after that many seconds, a
connection that could not be made after an exponential backoff; both get up to ``JITTER`` more, at random, so
clients refused together do not return together (never past the budget). A retry whose wait would end past the
budget is not made: the caller gets the error at once instead of after a wait that could not help.
"""

from __future__ import annotations

from collections.abc import Callable

BACKOFF_FIRST = 0.5
"""Seconds before the first retry of a connection error (doubling each time, up to ``BACKOFF_CAP``)."""
BACKOFF_CAP = 8.0
MIN_WAIT = 0.05
"""The shortest wait, even when the service says 0."""
JITTER = 0.25
"""Up to this fraction of the wait is added at random."""
MAX_RETRIES = 100
"""A bound on the retries of one call, whatever the budget."""


class RetryBudget:
    """The retries of one call: ``max_seconds`` in all, counted from the call's start by ``clock``."""

    def __init__(self, max_seconds: float, clock: Callable[[], float], random: Callable[[], float]) -> None:
        self.max_seconds = max(0.0, max_seconds)
        self._clock = clock
        self._random = random
        self._started = clock()
        self.retries = 0

    def next_wait(self, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when it would not fit in the budget.

        ``retry_after`` is what the service asked for; without it (a connection error) the backoff decides.
        """
        if self.retries >= MAX_RETRIES:
            return None
        backoff = min(BACKOFF_CAP, BACKOFF_FIRST * 2**self.retries)
        base = max(retry_after if retry_after is not None else backoff, MIN_WAIT)
        left = self.max_seconds - (self._clock() - self._started)
        if base > left:
            return None
        self.retries += 1
        return min(base * (1.0 + JITTER * min(max(self._random(), 0.0), 1.0)), left)
