"""Python client of the Shared Ollama Service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Typed errors (one class per error code of the service, under ``SharedOllamaError``), retries of 429/503 that
honour ``Retry-After`` within a time budget, and streams of typed chunks. The guide is docs/CLIENT_GUIDE.md.
"""

from shared_ollama_client.async_client import AsyncClient
from shared_ollama_client.client import Client
from shared_ollama_client.errors import (
    ERRORS_BY_CODE,
    BackendError,
    BackendUnavailable,
    ClientTimeout,
    Conflict,
    ConnectionFailed,
    FeatureNotImplemented,
    Forbidden,
    HeaderTimeout,
    InsufficientStorage,
    InternalError,
    InvalidImage,
    InvalidRequest,
    InvalidResponse,
    ModelNotFound,
    NotFound,
    PromptTooLarge,
    QueueFull,
    RateLimited,
    RequestBodyTimeout,
    RequestTimeout,
    RequestTooLarge,
    SharedOllamaError,
    TenantBusy,
    Unauthorized,
    UserBusy,
)
from shared_ollama_client.streams import AsyncStream, Stream

__version__ = "0.1.0"

__all__ = [
    "ERRORS_BY_CODE",
    "AsyncClient",
    "AsyncStream",
    "BackendError",
    "BackendUnavailable",
    "Client",
    "ClientTimeout",
    "Conflict",
    "ConnectionFailed",
    "FeatureNotImplemented",
    "Forbidden",
    "HeaderTimeout",
    "InsufficientStorage",
    "InternalError",
    "InvalidImage",
    "InvalidRequest",
    "InvalidResponse",
    "ModelNotFound",
    "NotFound",
    "PromptTooLarge",
    "QueueFull",
    "RateLimited",
    "RequestBodyTimeout",
    "RequestTimeout",
    "RequestTooLarge",
    "SharedOllamaError",
    "Stream",
    "TenantBusy",
    "Unauthorized",
    "UserBusy",
    "__version__",
]
