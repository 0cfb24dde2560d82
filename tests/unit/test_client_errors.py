"""The Python client's errors: every error code the service can send maps to a class of the same name, status
and code, from either error format; ``Retry-After`` and request ids are carried."""

from __future__ import annotations

import json

import pytest
import shared_ollama_client as client_api
from shared_ollama_client._wire import parse_retry_after
from shared_ollama_client.errors import (
    ERRORS_BY_CODE,
    BackendUnavailable,
    HeaderTimeout,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PromptTooLarge,
    RateLimited,
    RequestBodyTimeout,
    SharedOllamaError,
    TenantBusy,
    UserBusy,
    error_from_body,
)

from shared_ollama import errors as service_errors
from shared_ollama.api.errors import native_error_body, openai_error_body
from shared_ollama.http_server import REQUEST_HEAD_TIMEOUT


def _service_classes() -> list[type[service_errors.SharedOllamaError]]:
    found: list[type[service_errors.SharedOllamaError]] = []
    pending = list(service_errors.SharedOllamaError.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls.__module__ == service_errors.__name__:  # the hierarchy itself, not refinements other modules import
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("service_cls", _service_classes(), ids=lambda cls: cls.code)
def test_every_code_of_the_service_maps_to_its_class(service_cls: type[service_errors.SharedOllamaError]) -> None:
    raised = service_cls("what went wrong")
    for body in (native_error_body(raised, "req-1"), openai_error_body(raised, "req-1")):
        error = error_from_body(raised.status, body)
        assert type(error) is ERRORS_BY_CODE[raised.code]
        assert type(error).__name__ == service_cls.__name__
        assert isinstance(error, SharedOllamaError)
        assert (error.code, error.status, error.message) == (raised.code, raised.status, "what went wrong")
        assert error.retry_after == raised.retry_after
        assert error.request_id == "req-1"
        assert getattr(client_api, type(error).__name__) is type(error), "exported by the package"


def test_the_answer_to_a_late_request_head_is_a_header_timeout() -> None:
    """Made outside the hierarchy (``http_server.py``); the other such code, ``client_closed``, is a bodiless 499
    to a client that has already gone, so no client ever reads it."""
    head, _, body = REQUEST_HEAD_TIMEOUT.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    error = error_from_body(408, json.loads(body))
    assert type(error) is HeaderTimeout and isinstance(error, RequestBodyTimeout)
    assert (error.code, error.status) == ("header_timeout", 408)
    assert ERRORS_BY_CODE["header_timeout"] is HeaderTimeout is client_api.HeaderTimeout


def test_an_error_frame_without_a_status_gets_its_codes_status() -> None:
    frame = {"error": "the tenant is busy", "code": "tenant_busy", "retry_after": 1.5, "request_id": "r"}
    error = error_from_body(None, frame)
    assert isinstance(error, TenantBusy)
    assert (error.status, error.retry_after) == (429, 1.5)


def test_subclasses_are_caught_by_their_family() -> None:
    assert issubclass(UserBusy, TenantBusy)
    assert issubclass(PromptTooLarge, InvalidRequest)
    assert issubclass(ModelNotFound, NotFound)


def test_the_retry_after_header_wins_over_the_body_and_the_header_id_is_a_fallback() -> None:
    body = {"error": "slow down", "code": "rate_limited", "retry_after": 0.4}
    error = error_from_body(429, body, retry_after=3.0, request_id="from-header")
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3.0
    assert error.request_id == "from-header"
    assert error_from_body(429, body).retry_after == 0.4


def test_an_unknown_code_falls_back_to_its_status_then_to_the_base() -> None:
    unknown = error_from_body(503, {"error": "new kind of busy", "code": "brand_new"})
    assert isinstance(unknown, BackendUnavailable)
    assert unknown.code == "brand_new"
    bare = error_from_body(599, {"error": "odd"})
    assert type(bare) is SharedOllamaError and bare.status == 599


def test_a_body_that_is_not_an_error_body_still_gives_a_clear_error() -> None:
    error = error_from_body(500, "<html>oops</html>")
    assert isinstance(error, InternalError)
    assert "HTTP 500" in error.message
    assert "internal_error" in str(error)


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412490.0) == 0.0
