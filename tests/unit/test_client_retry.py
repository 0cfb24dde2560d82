"""The Python client's retry budget: waits honour Retry-After plus bounded jitter, connection errors back off,
and no retry is made whose wait would end past the budget."""

from __future__ import annotations

from shared_ollama_client._retry import BACKOFF_CAP, BACKOFF_FIRST, JITTER, MAX_RETRIES, RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_is_retry_after_plus_at_most_the_jitter() -> None:
    clock = FakeClock()
    assert RetryBudget(60, clock, lambda: 0.0).next_wait(2.0) == 2.0
    assert RetryBudget(60, clock, lambda: 1.0).next_wait(2.0) == 2.0 * (1 + JITTER)
    assert RetryBudget(60, clock, lambda: 0.5).next_wait(2.0) == 2.0 * (1 + JITTER / 2)


def test_connection_errors_back_off_exponentially_up_to_the_cap() -> None:
    budget = RetryBudget(1000, FakeClock(), lambda: 0.0)
    waits = [budget.next_wait(None) for _ in range(8)]
    assert waits[:3] == [BACKOFF_FIRST, BACKOFF_FIRST * 2, BACKOFF_FIRST * 4]
    assert waits[-1] == BACKOFF_CAP


def test_a_wait_that_would_end_past_the_budget_is_not_made() -> None:
    clock = FakeClock()
    budget = RetryBudget(5, clock, lambda: 0.0)
    assert budget.next_wait(2.0) == 2.0
    clock.now += 2.0
    assert budget.next_wait(2.0) == 2.0
    clock.now += 2.0
    assert budget.next_wait(2.0) is None, "one second left, two asked"
    assert budget.retries == 2
    assert RetryBudget(0, clock, lambda: 0.0).next_wait(1.0) is None, "a budget of 0 never retries"
    assert RetryBudget(0.5, clock, lambda: 0.0).next_wait(1.0) is None


def test_the_jitter_never_takes_the_wait_past_the_budget() -> None:
    clock = FakeClock()
    budget = RetryBudget(2.2, clock, lambda: 1.0)
    assert budget.next_wait(2.0) == 2.2


def test_retries_are_bounded_in_count_whatever_the_budget() -> None:
    budget = RetryBudget(1e9, FakeClock(), lambda: 0.0)
    waits = [budget.next_wait(0.0) for _ in range(MAX_RETRIES + 5)]
    assert waits.count(None) == 5
