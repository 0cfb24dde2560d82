"""The error hierarchy: every 429 and 503 says when to retry, even when raised without an estimate."""

from __future__ import annotations

import pytest

from shared_ollama import errors
from shared_ollama.errors import BackendUnavailable, QueueFull, RequestTimeout, SharedOllamaError, TenantBusy


def _all_error_classes() -> list[type[SharedOllamaError]]:
    found: list[type[SharedOllamaError]] = []
    pending: list[type[SharedOllamaError]] = [SharedOllamaError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("cls", "seconds"), [(TenantBusy, 1.0), (QueueFull, 1.0), (RequestTimeout, 1.0), (BackendUnavailable, 2.0)]
)
def test_a_429_or_503_raised_without_an_estimate_gets_the_default(cls: type[SharedOllamaError], seconds: float) -> None:
    assert cls("no estimate").retry_after == seconds
    assert cls("estimated", retry_after=7.5).retry_after == 7.5


def test_every_429_and_503_class_has_a_retry_after_and_no_other_does() -> None:
    retrying = sorted(cls.code for cls in _all_error_classes() if cls.status in errors.RETRY_STATUSES)
    assert retrying == [
        "backend_unavailable",
        "queue_full",
        "rate_limited",
        "request_timeout",
        "tenant_busy",
        "user_busy",
    ]
    for cls in _all_error_classes():
        if cls.status in errors.RETRY_STATUSES:
            assert cls("x").retry_after == cls.default_retry_after > 0, cls.__name__
    assert errors.InvalidRequest("x").retry_after is None


def test_a_slow_body_is_408_body_timeout() -> None:
    error = errors.RequestBodyTimeout("late")
    assert (error.status, error.code, error.retry_after) == (408, "body_timeout", None)
