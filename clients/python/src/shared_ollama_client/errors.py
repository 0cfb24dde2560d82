"""The service's errors as exceptions: one class per error code, all under ``SharedOllamaError``.

The service answers errors as ``{"error": "<message>", "code", "retry_after", "request_id"}`` (its own API), or
``{"error": {"message", "type", "code", "retry_after", ...}}`` (the OpenAI-format paths), and ends a stream that
fails after its first byte with one such frame. ``error_from_body`` turns any of these into the class of its code;
an unknown code falls back to the class of its HTTP status, then to ``SharedOllamaError`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class SharedOllamaError(Exception):
    """Base of every error this client raises.

    ``code`` is the service's error code, ``status`` the HTTP status (``None`` for errors that never reached the
    service), ``retry_after`` the seconds the service asked to wait (429 and 503), ``request_id`` the service's id
    of the request (quote it when reporting a problem), ``message`` the service's explanation.
    """

    default_code: ClassVar[str] = "internal_error"
    default_status: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status if status is not None else self.default_status
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        return f"{self.message} ({self.code}{where})"


class InvalidRequest(SharedOllamaError):
    """400: the request is malformed or names a field the service cannot honour."""

    default_code = "invalid_request"
    default_status = 400


class PromptTooLarge(InvalidRequest):
    """400: the prompt is over the service's token limit."""

    default_code = "prompt_too_large"


class InvalidImage(InvalidRequest):
    """400: an image could not be decoded or is not allowed."""

    default_code = "invalid_image"


class Unauthorized(SharedOllamaError):
    """401: a key is required, or the one sent is unknown."""

    default_code = "unauthorized"
    default_status = 401


class Forbidden(SharedOllamaError):
    """403: the caller's tenant may not do this (a model outside its list, an admin-only operation)."""

    default_code = "forbidden"
    default_status = 403


class NotFound(SharedOllamaError):
    """404: no such endpoint, agent, run or document."""

    default_code = "not_found"
    default_status = 404


class ModelNotFound(NotFound):
    """404: the model is not installed (or not known to the registry asked)."""

    default_code = "model_not_found"


class Conflict(SharedOllamaError):
    """409: the request contradicts the current state (an agent or tenant that already exists)."""

    default_code = "conflict"
    default_status = 409


class RequestBodyTimeout(SharedOllamaError):
    """408: the request body did not arrive in time."""

    default_code = "body_timeout"
    default_status = 408


class HeaderTimeout(RequestBodyTimeout):
    """408: the request's head (its line and headers) did not arrive in time; the service closed the connection."""

    default_code = "header_timeout"


class RequestTooLarge(SharedOllamaError):
    """413: the request body is over the service's limit."""

    default_code = "request_too_large"
    default_status = 413


class TenantBusy(SharedOllamaError):
    """429: the tenant (project) has as many requests in flight as it may; retried by the client."""

    default_code = "tenant_busy"
    default_status = 429


class UserBusy(TenantBusy):
    """429: one end user of the tenant is at the per-user cap; retried by the client."""

    default_code = "user_busy"


class RateLimited(SharedOllamaError):
    """429: over a quota (requests or tokens per minute, tokens per day); retried by the client."""

    default_code = "rate_limited"
    default_status = 429


class QueueFull(SharedOllamaError):
    """503: the service's shared queue is full; retried by the client."""

    default_code = "queue_full"
    default_status = 503


class RequestTimeout(SharedOllamaError):
    """503: the request waited and ran longer than the service's deadline; retried by the client."""

    default_code = "request_timeout"
    default_status = 503


class BackendUnavailable(SharedOllamaError):
    """503: the inference engine is down or restarting; retried by the client."""

    default_code = "backend_unavailable"
    default_status = 503


class FeatureNotImplemented(SharedOllamaError):
    """501: an operation the service deliberately does not offer."""

    default_code = "not_implemented"
    default_status = 501


class BackendError(SharedOllamaError):
    """502: the inference engine failed the request."""

    default_code = "backend_error"
    default_status = 502


class InsufficientStorage(SharedOllamaError):
    """507: a pull that would not fit on the model store's disk."""

    default_code = "insufficient_storage"
    default_status = 507


class InternalError(SharedOllamaError):
    """500: an unexpected failure in the service (its log has the request id)."""

    default_code = "internal_error"
    default_status = 500


class ConnectionFailed(SharedOllamaError):
    """The service could not be reached, or the connection broke (no HTTP status)."""

    default_code = "connection_error"


class ClientTimeout(SharedOllamaError):
    """No answer within the client's own ``timeout`` (no HTTP status)."""

    default_code = "client_timeout"


class InvalidResponse(SharedOllamaError):
    """The service's answer could not be read (not JSON where JSON was due)."""

    default_code = "invalid_response"


ERRORS_BY_CODE: Mapping[str, type[SharedOllamaError]] = {
    cls.default_code: cls
    for cls in (
        InvalidRequest,
        PromptTooLarge,
        InvalidImage,
        Unauthorized,
        Forbidden,
        NotFound,
        ModelNotFound,
        Conflict,
        RequestBodyTimeout,
        HeaderTimeout,
        RequestTooLarge,
        TenantBusy,
        UserBusy,
        RateLimited,
        QueueFull,
        RequestTimeout,
        BackendUnavailable,
        FeatureNotImplemented,
        BackendError,
        InsufficientStorage,
        InternalError,
    )
}
"""The class of each error code the service sends. (``client_closed``, 499, is only in the service's records: it
answers a client that has already gone, with no body.)"""

_BY_STATUS: Mapping[int, type[SharedOllamaError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestBodyTimeout,
    409: Conflict,
    413: RequestTooLarge,
    429: RateLimited,
    500: InternalError,
    501: FeatureNotImplemented,
    502: BackendError,
    503: BackendUnavailable,
    507: InsufficientStorage,
}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 else None


def error_from_body(
    status: int | None,
    body: object,
    *,
    retry_after: float | None = None,
    request_id: str | None = None,
) -> SharedOllamaError:
    """The typed error for an error body (native flat, OpenAI nested, or anything else) with ``status``.

    ``retry_after`` (from the ``Retry-After`` header) wins over the body's ``retry_after``; ``request_id`` (from
    the response header) is used when the body carries none.
    """
    fields: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    nested = fields.get("error")
    if isinstance(nested, Mapping):
        fields = nested
        message = fields.get("message")
    else:
        message = nested
    code = fields.get("code") if isinstance(fields.get("code"), str) else None
    if retry_after is None:
        retry_after = _number(fields.get("retry_after"))
    body_id = fields.get("request_id")
    request_id = body_id if isinstance(body_id, str) and body_id else request_id
    if not isinstance(message, str) or not message:
        message = f"the service answered with HTTP {status}" if status is not None else "the service failed"
    cls = ERRORS_BY_CODE.get(code or "") or _BY_STATUS.get(status or 0) or SharedOllamaError
    if status is None:
        status = cls.default_status
    return cls(message, code=code, status=status, retry_after=retry_after, request_id=request_id)
