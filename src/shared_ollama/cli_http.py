"""How the CLI talks to a running service: where it is, the connection options, and one HTTP helper.

The service is found the way it was configured: ``--url`` (accepted before or after any subcommand), else
``SHARED_OLLAMA_URL``, else ``http://SHARED_OLLAMA_HOST:SHARED_OLLAMA_PORT`` (a wildcard host as loopback). A key
(``--api-key``, else the command's environment variable) is sent as a bearer key. Refusals become
``ServiceError`` with the status and the service's message, e.g. ``429: tenant 'app' is at its cap (retry after
2 s)``; so does an answer that is not JSON (a ``--url`` that is not the service, say). A file a command cannot read
(missing, or not UTF-8) is a ``UsageError`` naming it.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
API_KEY_ENV = "SHARED_OLLAMA_API_KEY"
ADMIN_KEY_ENV = "SHARED_OLLAMA_ADMIN_KEY"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ServiceError(Exception):
    """The service refused (``status``: the HTTP status) or could not be reached (``status`` None); the message
    is what the CLI prints."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UsageError(ValueError):
    """A command line or input file a command cannot use (exit code 2); the message says why."""


def read_text(path: Path) -> str:
    """The text of a file the user named, as UTF-8; a file that cannot be read or is not UTF-8 raises UsageError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (at byte offset {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def model_path(name: str) -> str:
    """A model name as it goes into the service's URLs: quoted, ``:`` and ``/`` kept (``/api/v1/models/{name}``
    takes a path)."""
    return quote(name, safe=":/")


def service_url(settings: Settings) -> str:
    """The URL the CLI uses when ``--url`` is not given: ``settings.url``, else ``http://host:port``."""
    if settings.url:
        return settings.url.rstrip("/")
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


@dataclass(frozen=True)
class Service:
    """A running service at ``url``: requests with the key and a timeout (seconds per socket operation)."""

    url: str
    api_key: str | None = None
    timeout: float = 600.0

    def open(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        *,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        """The response (to be closed by the caller); an HTTP error or no connection raises ServiceError."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.api_key:
            sent["Authorization"] = f"Bearer {self.api_key}"
        if body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            response: HTTPResponse = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ServiceError(_refusal(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ServiceError(f"cannot reach the service at {self.url}: {reason}") from None
        return response

    def json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        """The answer's JSON object; an answer that is not one raises ServiceError."""
        with self.open(method, path, body) as response:
            raw = response.read()
        return self._decoded(raw, path) if raw else {}

    def lines(self, path: str, body: JsonDict) -> Generator[JsonDict, None, None]:
        """A streamed answer's NDJSON lines; an error line (``{"error": ...}``) raises ServiceError. Closing the
        iterator closes the connection (the service then frees the request's place at once)."""
        with self.open("POST", path, body) as response:
            for raw in response:
                if not raw.strip():
                    continue
                line = self._decoded(raw, path)
                if "error" in line:
                    raise ServiceError(_error_text(line))
                yield line

    def _decoded(self, raw: bytes, path: str) -> JsonDict:
        """One answer (or stream line) as a JSON object; anything else raises ServiceError showing its start."""
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            shown = raw[:80].decode("utf-8", "replace").strip()
            raise ServiceError(f"{self.url}{path} answered {shown!r}, not a JSON object: is that the service?")
        return value


def field_object(body: Mapping[str, Any], name: str) -> JsonDict:
    """``body[name]`` when it is a JSON object, else an empty one (for reading answers defensively)."""
    value = body.get(name)
    return value if isinstance(value, dict) else {}


def _error_text(body: Mapping[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict):  # the OpenAI surface's shape
        error = error.get("message")
    text = str(error)
    retry = body.get("retry_after")
    return f"{text} (retry after {retry} s)" if retry else text


def _refusal(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
    except (ValueError, OSError):
        body = None
    detail = _error_text(body) if isinstance(body, dict) and "error" in body else str(exc.reason)
    retry = exc.headers.get("Retry-After") if exc.headers else None
    if retry and "retry after" not in detail:
        detail += f" (retry after {retry} s)"
    return f"{exc.code}: {detail}"


def add_connection(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--url``, ``--api-key`` and ``--timeout`` on ``parser``. Every parser on the way to a command that talks
    to the service gets them, so they are accepted before or after any subcommand; only the root's have defaults
    (None), so a subcommand's copy overrides only when given."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--url", default=default(None), help="the running service (default: $SHARED_OLLAMA_URL, else host:port)"
    )
    parser.add_argument(
        "--api-key",
        default=default(None),
        help=f"the key to send (default: ${API_KEY_ENV}; for tenants: ${ADMIN_KEY_ENV})",
    )
    parser.add_argument("--timeout", type=float, default=default(None), help="seconds per request step")


def service_from(
    args: argparse.Namespace, settings: Settings, env: Mapping[str, str], *, key_env: str, timeout: float
) -> Service:
    """The service a command talks to: ``--url`` or the settings; ``--api-key`` or ``env[key_env]``."""
    url = (getattr(args, "url", None) or service_url(settings)).rstrip("/")
    key = getattr(args, "api_key", None) or env.get(key_env) or None
    return Service(url, key, getattr(args, "timeout", None) or timeout)


def parse_options(pairs: list[str] | None) -> JsonDict:
    """``--option name=value`` items as an options object: a value that reads as JSON is that (``0.2``,
    ``true``, ``["a"]``), any other one a string. A pair without ``=`` or a name raises UsageError."""
    options: JsonDict = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"an option is name=value, got {pair!r}")
        try:
            options[name.strip()] = json.loads(value)
        except ValueError:
            options[name.strip()] = value
    return options
