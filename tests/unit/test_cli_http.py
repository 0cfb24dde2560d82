"""How the CLI finds the service (``--url`` anywhere, else the settings: URL, else host and port), which key it
sends, ``--option`` parsing, and how a refusal reads."""

from __future__ import annotations

import io
import urllib.error
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest

from shared_ollama.cli import build_parser
from shared_ollama.cli_http import (
    API_KEY_ENV,
    Service,
    ServiceError,
    UsageError,
    _refusal,
    parse_options,
    service_from,
    service_url,
)
from shared_ollama.cli_models import run_models
from shared_ollama.settings import Settings


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"SHARED_OLLAMA_PORT": "9123"}, "http://127.0.0.1:9123"),
        ({"SHARED_OLLAMA_HOST": "0.0.0.0", "SHARED_OLLAMA_PORT": "9124"}, "http://127.0.0.1:9124"),
        ({"SHARED_OLLAMA_HOST": "::"}, "http://[::1]:8000"),
        ({"SHARED_OLLAMA_HOST": "fd00::5", "SHARED_OLLAMA_PORT": "81"}, "http://[fd00::5]:81"),
        ({"SHARED_OLLAMA_HOST": "gpu-box"}, "http://gpu-box:8000"),
        ({"SHARED_OLLAMA_URL": "http://gw:7000/", "SHARED_OLLAMA_PORT": "9125"}, "http://gw:7000"),
    ],
)
def test_the_service_is_found_the_way_it_was_configured(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert service_url(Settings()) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://x:1", "models", "ls"],
        ["models", "--url", "http://x:1", "ls"],
        ["models", "ls", "--url", "http://x:1"],
        ["models", "create", "m", "--url", "http://x:1", "-f", "Modelfile"],
        ["chat", "m", "hi", "--url", "http://x:1"],
        ["tune", "--url", "http://x:1", "try", "m", "prompts.txt"],
        ["tune", "try", "m", "prompts.txt", "--url", "http://x:1"],
        ["tenants", "key", "--url", "http://x:1", "add", "app"],
        ["health", "--url", "http://x:1"],
        ["--url", "http://other:2", "models", "--url", "http://x:1", "ls"],
    ],
)
def test_url_is_accepted_before_or_after_any_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert service_from(args, Settings(port=9), {}, key_env=API_KEY_ENV, timeout=1).url == "http://x:1"


def test_without_url_the_settings_decide_and_the_key_comes_from_the_option_or_the_environment() -> None:
    args = build_parser().parse_args(["models", "ls"])
    service = service_from(args, Settings(port=9126), {API_KEY_ENV: "k-env"}, key_env=API_KEY_ENV, timeout=7)
    assert (service.url, service.api_key, service.timeout) == ("http://127.0.0.1:9126", "k-env", 7)
    args = build_parser().parse_args(["models", "ls", "--api-key", "k-opt", "--timeout", "3"])
    service = service_from(args, Settings(url="http://gw:1/"), {API_KEY_ENV: "k-env"}, key_env=API_KEY_ENV, timeout=7)
    assert (service.url, service.api_key, service.timeout) == ("http://gw:1", "k-opt", 3)


def test_options_are_json_values_or_strings() -> None:
    assert parse_options(["temperature=0", 'stop=["\\n"]', "seed=42", "mirostat=true", "name=a=b", "x=hi"]) == {
        "temperature": 0,
        "stop": ["\n"],
        "seed": 42,
        "mirostat": True,
        "name": "a=b",
        "x": "hi",
    }
    assert parse_options(None) == {}
    for bad in ("temperature", "=1"):
        with pytest.raises(UsageError, match="name=value"):
            parse_options([bad])


def _http_error(status: int, body: bytes, retry_after: str | None = None) -> urllib.error.HTTPError:
    headers = Message()
    if retry_after:
        headers["Retry-After"] = retry_after
    return urllib.error.HTTPError("http://x/", status, "Reason", headers, io.BytesIO(body))


def test_a_refusal_reads_with_its_status_message_and_when_to_retry() -> None:
    busy = b'{"error":"tenant app is at its cap","code":"tenant_busy","retry_after":2,"request_id":"r"}'
    assert _refusal(_http_error(429, busy, "2")) == "429: tenant app is at its cap (retry after 2 s)"
    assert _refusal(_http_error(503, b"not json", "5")) == "503: Reason (retry after 5 s)"
    openai = b'{"error":{"message":"bad model","type":"invalid_request_error"}}'
    assert _refusal(_http_error(400, openai)) == "400: bad model"
    assert ServiceError("x", 404).status == 404


@dataclass(frozen=True)
class Answering(Service):
    """A service whose every answer is ``raw`` (a stream: its lines)."""

    raw: bytes = b""

    def open(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        return io.BytesIO(self.raw)


@pytest.mark.parametrize("raw", [b"<html>Not Found</html>", b"[1, 2]", b'"text"'])
def test_an_answer_that_is_not_a_json_object_is_a_service_error(raw: bytes) -> None:
    service = Answering("http://x", raw=raw)
    with pytest.raises(ServiceError, match=r"http://x/api/v1/health answered .*, not a JSON object: is that"):
        service.json("GET", "/api/v1/health")


def test_a_stream_line_that_is_not_json_is_a_service_error_not_a_traceback() -> None:
    service = Answering("http://x", raw=b'{"status": "pulling"}\n\nnot json\n{"status": "never read"}\n')
    lines = service.lines("/api/v1/models/pull", {"name": "m"})
    assert next(lines) == {"status": "pulling"}
    with pytest.raises(ServiceError, match=r"answered 'not json', not a JSON object"):
        next(lines)
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["models", "pull", "m"])
    assert run_models(args, Answering("http://x", raw=b"oops\n"), out, err) == 1
    assert (
        err.getvalue()
        == "error: http://x/api/v1/models/pull answered 'oops', not a JSON object: is that the service?\n"
    )
