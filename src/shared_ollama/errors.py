"""One exception hierarchy. Each error knows its code and HTTP status; api/errors.py renders it per surface."""

from __future__ import annotations

from typing import ClassVar

RETRY_STATUSES = frozenset({429, 503})
"""Statuses that always tell the client when to retry (``Retry-After`` header and ``retry_after`` field)."""


class SharedOllamaError(Exception):
    """Base of every error the service reports to a client."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    default_retry_after: ClassVar[float] = 1.0
    """Seconds to wait before retrying, for a 429 or 503 raised without an estimate of its own."""

    def __init__(self, message: str, *, retry_after: float | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is None and self.status in RETRY_STATUSES:
            retry_after = self.default_retry_after
        self.retry_after = retry_after
        self.param = param


class InvalidRequest(SharedOllamaError):
    code = "invalid_request"
    status = 400
    openai_type = "invalid_request_error"


class PromptTooLarge(InvalidRequest):
    code = "prompt_too_large"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class Unauthorized(SharedOllamaError):
    code = "unauthorized"
    status = 401
    openai_type = "authentication_error"


class Forbidden(SharedOllamaError):
    code = "forbidden"
    status = 403
    openai_type = "permission_error"


class ModelNotFound(SharedOllamaError):
    code = "model_not_found"
    status = 404
    openai_type = "invalid_request_error"


class NotFound(SharedOllamaError):
    """An unknown endpoint (models have their own ``model_not_found``)."""

    code = "not_found"
    status = 404
    openai_type = "invalid_request_error"


class Conflict(SharedOllamaError):
    """The request contradicts the current state (a tenant that already exists, a change that would lock out
    every admin)."""

    code = "conflict"
    status = 409
    openai_type = "invalid_request_error"


class RequestBodyTimeout(SharedOllamaError):
    """The client did not send its whole body within ``body_timeout`` (a slow or stalled upload)."""

    code = "body_timeout"
    status = 408
    openai_type = "invalid_request_error"


class RequestTooLarge(SharedOllamaError):
    code = "request_too_large"
    status = 413
    openai_type = "invalid_request_error"


class TenantBusy(SharedOllamaError):
    code = "tenant_busy"
    status = 429
    openai_type = "rate_limit_error"


class RateLimited(SharedOllamaError):
    """Over a quota (requests or tokens per minute, tokens per day); ``Retry-After`` comes from the window."""

    code = "rate_limited"
    status = 429
    openai_type = "rate_limit_error"


class UserBusy(TenantBusy):
    """One end user of a tenant (``X-Shared-Ollama-User`` ...) is at the tenant's per-user cap."""

    code = "user_busy"


class QueueFull(SharedOllamaError):
    code = "queue_full"
    status = 503
    openai_type = "server_error"


class RequestTimeout(SharedOllamaError):
    code = "request_timeout"
    status = 503
    openai_type = "server_error"


class BackendUnavailable(SharedOllamaError):
    code = "backend_unavailable"
    status = 503
    openai_type = "server_error"
    default_retry_after = 2.0


class FeatureNotImplemented(SharedOllamaError):
    """An operation the service deliberately does not offer (``/api/push``: it never publishes models)."""

    code = "not_implemented"
    status = 501
    openai_type = "invalid_request_error"


class BackendError(SharedOllamaError):
    code = "backend_error"
    status = 502
    openai_type = "server_error"
    upstream_status: int | None = None
    """The engine's own HTTP status, when the error is its non-2xx answer (a 5xx may be another host's to retry)."""


class InsufficientStorage(SharedOllamaError):
    """A pull that would not fit on the model store's disk (with ``min_free_disk_bytes`` left free)."""

    code = "insufficient_storage"
    status = 507
    openai_type = "server_error"


class InternalError(SharedOllamaError):
    code = "internal_error"
    status = 500
    openai_type = "server_error"


def error_for_code(code: str, message: str) -> SharedOllamaError:
    """The error of the class whose ``code`` this is (``InternalError`` when none is), e.g. to raise again an error
    a stored or relayed result only names."""
    pending: list[type[SharedOllamaError]] = [SharedOllamaError]
    while pending:
        cls = pending.pop()
        if cls.code == code and cls is not SharedOllamaError:
            return cls(message)
        pending += cls.__subclasses__()
    return InternalError(message)
