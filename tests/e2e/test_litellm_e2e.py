"""The LiteLLM SDK against the service, both ways docs/LITELLM_GUIDE.md shows: ``openai/<model>`` with
``api_base=<gateway>/v1`` (our OpenAI surface) and ``ollama_chat/<model>`` with ``api_base=<gateway>`` (our Ollama
surface); streamed and not, greedy, 8 tokens. LiteLLM is kept to this machine: its bundled model cost map and
offline mode, and every name lookup or connection other than loopback refused and recorded (none may happen)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

MODEL = "smollm2:135m"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Outside:
    """Name lookups and connections other than loopback: refused, and remembered for the assertion."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, host: object) -> None:
        if isinstance(host, bytes):
            host = host.decode()
        if host not in LOOPBACK:
            self.attempts.append(str(host))
            raise OSError(f"the test allows loopback only, not {host}")


@pytest.fixture
def outside(monkeypatch: pytest.MonkeyPatch) -> Outside:
    seen = Outside()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.check(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.check(address[0])
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch, outside: Outside) -> Iterator[ModuleType]:
    """LiteLLM, imported with its offline switches on (they are read at import and at first use)."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "true")
    import litellm

    yield litellm
    assert outside.attempts == [], f"LiteLLM tried to reach {outside.attempts}"


def routes(gateway_url: str) -> list[dict[str, Any]]:
    return [
        {"model": f"openai/{MODEL}", "api_base": f"{gateway_url}/v1", "api_key": "unused-with-auth-off"},
        {"model": f"ollama_chat/{MODEL}", "api_base": gateway_url},
    ]


def check_usage(usage: Any) -> None:
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("route", [0, 1], ids=["openai", "ollama_chat"])
def test_completion(litellm: ModuleType, gateway_url: str, route: int) -> None:
    project = f"litellm-{route}-{uuid.uuid4().hex[:8]}"
    response = litellm.completion(
        messages=MESSAGES,
        temperature=0,
        max_tokens=8,
        extra_headers={"X-Shared-Ollama-Project": project},
        **routes(gateway_url)[route],
    )
    assert response.choices[0].message.content.strip()
    assert response.choices[0].message.role == "assistant"
    check_usage(response.usage)
    assert tenant_requests(gateway_url, project) == 1  # LiteLLM's extra_headers named the tenant


def tenant_requests(gateway_url: str, tenant: str) -> int:
    """Requests the service counted for ``tenant`` in the last hour."""
    params = {"window": "1h", "tenant": tenant}
    resp = httpx.get(f"{gateway_url}/api/v1/usage", params=params, headers={"X-Shared-Ollama-Project": tenant})
    return sum(int(row["requests"]) for row in resp.json()["rows"])


@pytest.mark.parametrize("route", [0, 1], ids=["openai", "ollama_chat"])
def test_streamed_completion(litellm: ModuleType, gateway_url: str, route: int) -> None:
    stream = litellm.completion(
        messages=MESSAGES,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        **routes(gateway_url)[route],
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text.strip()
    usage = [chunk.usage for chunk in chunks if getattr(chunk, "usage", None)]
    assert usage, "no usage in the stream"
    check_usage(usage[-1])
