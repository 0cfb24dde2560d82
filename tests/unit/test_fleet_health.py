"""A host's circuit breaker on a fake clock: every transition, the doubling backoff, the one half-open trial."""

from __future__ import annotations

import pytest

from shared_ollama.service.fleet.health import MAX_ERROR_CHARS, BreakerPolicy, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, **policy: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerPolicy(**policy), clock=clock, wall=lambda: 1_000.0 + clock.now)  # type: ignore[arg-type]


def test_a_new_breaker_is_up_and_lets_requests_through(clock: Clock) -> None:
    b = breaker(clock)
    assert b.state is BreakerState.UP
    assert b.available and b.allows_request() and b.allows_request()
    assert b.snapshot() == {
        "state": "up",
        "requests": 0,
        "failures": 0,
        "consecutive_failures": 0,
        "last_error": None,
        "last_change": 1_100.0,
        "retry_in_seconds": 0.0,
    }


def test_one_failure_opens_it_by_default(clock: Clock) -> None:
    b = breaker(clock, backoff=2.0)
    clock.now += 5
    b.record_failure("cannot connect")
    assert b.state is BreakerState.DOWN
    assert not b.available and not b.allows_request()
    assert (b.requests, b.failures, b.last_error, b.last_change) == (1, 1, "cannot connect", 1_105.0)
    assert b.retry_in() == 2.0


def test_it_opens_after_the_threshold_of_failures_in_a_row(clock: Clock) -> None:
    b = breaker(clock, failure_threshold=3)
    b.record_failure("a")
    b.record_failure("b")
    b.record_success()  # breaks the run
    b.record_failure("c")
    b.record_failure("d")
    assert b.state is BreakerState.UP
    b.record_failure("e")
    assert b.state is BreakerState.DOWN
    assert (b.requests, b.failures, b.consecutive_failures) == (6, 5, 3)


def test_after_its_backoff_exactly_one_trial_goes_through(clock: Clock) -> None:
    b = breaker(clock, backoff=2.0)
    b.record_failure("x")
    clock.now += 1.999
    assert not b.allows_request()
    clock.now += 0.001
    assert b.allows_request()
    assert b.state is BreakerState.PROBING
    assert not b.available  # nothing is placed on a host under trial
    assert not b.allows_request()
    assert not b.allows_request()


def test_a_successful_trial_closes_it_and_resets_the_backoff(clock: Clock) -> None:
    b = breaker(clock, backoff=1.0, backoff_max=10.0)
    b.record_failure("x")
    clock.now += 1
    assert b.allows_request()
    b.record_failure("still down")  # backoff 2
    clock.now += 2
    assert b.allows_request()
    clock.now += 0.5
    b.record_success(probe=True)
    assert b.state is BreakerState.UP and b.available
    assert b.last_change == 1_000.0 + clock.now
    assert b.backoff == 1.0
    b.record_failure("again")
    assert b.retry_in() == 1.0


def test_each_failed_trial_doubles_the_backoff_up_to_the_max(clock: Clock) -> None:
    b = breaker(clock, backoff=1.0, backoff_max=5.0)
    b.record_failure("x")
    waits = []
    for _ in range(5):
        waits.append(b.retry_in())
        clock.now += b.retry_in()
        assert b.allows_request()
        b.record_failure("trial failed")
        assert b.state is BreakerState.DOWN
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_trial_that_never_reports_frees_its_place_after_the_probe_timeout(clock: Clock) -> None:
    b = breaker(clock, backoff=1.0, probe_timeout=10.0)
    b.record_failure("x")
    clock.now += 1
    assert b.allows_request()
    clock.now += 9.9
    assert not b.allows_request()
    clock.now += 0.1
    assert b.allows_request()
    assert not b.allows_request()


def test_a_success_while_down_closes_it(clock: Clock) -> None:
    b = breaker(clock, backoff=30.0)
    b.record_failure("x")
    b.record_success()  # a request sent before it opened came back fine: the host answers
    assert b.state is BreakerState.UP


def test_a_failure_while_down_counts_but_does_not_extend_the_backoff(clock: Clock) -> None:
    b = breaker(clock, backoff=4.0)
    b.record_failure("first")
    clock.now += 3
    b.record_failure("late outcome")
    assert b.state is BreakerState.DOWN
    assert b.retry_in() == 1.0
    assert (b.failures, b.last_error) == (2, "late outcome")


def test_probes_change_the_state_but_are_not_counted_as_requests(clock: Clock) -> None:
    b = breaker(clock, failure_threshold=2)
    b.record_failure("probe failed", probe=True)
    assert (b.requests, b.failures, b.consecutive_failures, b.last_error) == (0, 0, 1, "probe failed")
    b.record_failure("probe failed again", probe=True)
    assert b.state is BreakerState.DOWN
    b.record_success(probe=True)
    assert (b.requests, b.failures, b.state) == (0, 0, BreakerState.UP)


def test_the_snapshot_of_a_down_host(clock: Clock) -> None:
    b = breaker(clock, backoff=8.0)
    b.record_success()
    b.record_failure("e" * (MAX_ERROR_CHARS + 50))
    clock.now += 3
    snap = b.snapshot()
    assert snap["state"] == "down"
    assert (snap["requests"], snap["failures"], snap["consecutive_failures"]) == (2, 1, 1)
    assert snap["last_error"] == "e" * MAX_ERROR_CHARS
    assert snap["retry_in_seconds"] == 5.0
    assert snap["last_change"] == 1_100.0


@pytest.mark.parametrize(
    "policy",
    [{"failure_threshold": 0}, {"backoff": 0}, {"backoff": 5, "backoff_max": 4}, {"probe_timeout": 0}],
)
def test_a_bad_policy_is_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**policy)  # type: ignore[arg-type]
