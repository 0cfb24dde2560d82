"""What a pull through the gateway takes: its fields are checked before the engine is asked, and the engine's
pull errors become the service's (a full disk is a 507, a model llama.cpp cannot run a 400)."""

from __future__ import annotations

import httpx
import pytest

from shared_ollama.api.model_common import _pull_error
from shared_ollama.errors import BackendError, InsufficientStorage, InvalidRequest, ModelNotFound


@pytest.mark.parametrize("path", ["/api/pull", "/api/v1/models/pull"])
async def test_a_field_pull_does_not_take_is_refused_by_name(gateway: httpx.AsyncClient, path: str) -> None:
    resp = await gateway.post(path, json={"model": "fine", "username": "me", "stream": False})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("'username' is not a pull field")
    bad = await gateway.post(path, json={"model": "fine", "insecure": "yes", "stream": False})
    assert (bad.status_code, bad.json()["error"]) == (400, "'insecure' must be true or false")
    ok = await gateway.post(path, json={"name": "fine", "model": "fine", "insecure": False, "stream": False})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("message", "kind", "status"),
    [
        ("not enough disk space for this pull: it needs 5 bytes", InsufficientStorage, 507),
        ("pull model manifest: file does not exist: 'x' is not in the registry", ModelNotFound, 404),
        ("quantization 'Q2_K' not found in 'o/r' (it has: Q4_K_M)", ModelNotFound, 404),
        ("cannot run 'm:1': architecture 'mllama' is not one llama.cpp can load", InvalidRequest, 400),
        ("digest mismatch for m.gguf: expected sha256 ab", BackendError, 502),
    ],
)
def test_the_engines_pull_errors_become_the_services(message: str, kind: type, status: int) -> None:
    error = _pull_error(message)
    assert type(error) is kind and error.status == status and error.message == message
