"""Schemathesis over the service's own OpenAPI schema, in process against the ASGI app and the scripted engine.

Every operation the schema lists gets a bounded, seeded set of generated requests (valid and invalid). Whatever
it sends, the gateway must answer below 500 (the one exception: ``501 not_implemented`` from an operation the
service documents as not offered, ``/api/push``), within ``CALL_TIMEOUT`` (no hang), with the request id header,
and every error in its surface's format (DESIGN.md §2): the OpenAI surface nests ``{"error": {...}}``, the
Anthropic surface answers ``{"type": "error", "error": {"type", "message"}}``, every other surface the flat
``{"error": "<message>", "code", "retry_after", "request_id"}``.

No operation is excluded: the scripted engine answers every path the gateway forwards (an unknown one with
Ollama's plain-text 404, which the gateway must translate like any engine error). One thing is adapted to the
scripted engine: it produces (and holds in memory) exactly as many tokens as asked, so a valid but huge token
count (``num_predict``, ``max_tokens``: up to 2**31-1 by the schema) is lowered to ``FAKE_TOKEN_CAP`` before the
call, and so are Ollama's ``-1``/``-2`` ("until done", which the scripted engine would echo back as a negative
token count). Out-of-range counts are sent as generated (and test_hostile_input.py sends the extremes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from shared_ollama.api.surfaces import ANTHROPIC, OPENAI, surface_of
from shared_ollama.app import create_app
from shared_ollama.settings import Settings
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.reliability

SEED = 20_261_010
MAX_EXAMPLES = 6
CALL_TIMEOUT = 15.0
FAKE_TOKEN_CAP = 64
TOKEN_COUNTS = frozenset({"num_predict", "max_tokens", "max_completion_tokens", "max_output_tokens"})
REQUEST_ID = "X-Shared-Ollama-Request-Id"
RETRY_STATUSES = (429, 503, 529)
NOT_OFFERED = frozenset({"/api/push"})
"""Operations the service documents as not offered: they answer ``501 not_implemented``."""

FUZZ_CONFIG = {
    "seed": SEED,
    # Hypothesis' health checks judge the data generation, not the gateway: on a busy 2-core CI runner
    # "too_slow" would fail a run that found nothing.
    "suppress-health-check": ["all"],
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "request-timeout": CALL_TIMEOUT,
}


@pytest.fixture
def gateway_schema(fake_engine: tuple[str, FakeEngine], tmp_path: Path) -> Iterator[Any]:
    """The schema served by the app itself; schemathesis runs the app's lifespan (and ends it after the test)."""
    url, _ = fake_engine
    # POML renders without namespaces here, so the fuzz means the same on a host that cannot make them (the
    # isolated renders have tests of their own, tests/integration/test_poml_renderer.py).
    app = create_app(Settings(engine="external", ollama_url=url, data_dir=tmp_path, poml_mode="trusted"))
    config = SchemathesisConfig.from_dict(FUZZ_CONFIG)
    try:
        yield schemathesis.openapi.from_asgi("/api/openapi.json", app, config=config)
    finally:
        asgi.shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("gateway_schema")


def _error_fields(surface: str, body: Any) -> list[str]:
    """What is wrong with an error body for ``surface`` (empty when it is in format)."""
    if not isinstance(body, dict) or "error" not in body:
        return [f"not an error object: {body!r}"]
    if surface == ANTHROPIC:
        error = body["error"]
        if body.get("type") != "error" or not isinstance(error, dict):
            return [f"Anthropic surface needs type 'error' and an error object, got {body!r}"]
        return [f"error.{k} not a string" for k in ("type", "message") if not isinstance(error.get(k), str)]
    if surface == OPENAI:
        error = body["error"]
        if not isinstance(error, dict):
            return [f"OpenAI surface needs a nested error object, got {error!r}"]
        wrong = [f"error.{k} missing" for k in ("message", "type", "code", "param") if k not in error]
        wrong += [f"error.{k} not a string" for k in ("message", "type", "code") if not isinstance(error.get(k), str)]
        return wrong
    wrong = [f"{k} missing" for k in ("error", "code", "retry_after", "request_id") if k not in body]
    wrong += [f"{k} not a string" for k in ("error", "code", "request_id") if not isinstance(body.get(k), str)]
    return wrong


def below_500(ctx: Any, response: Any, case: Any) -> bool | None:
    """No server error, except the documented ``501 not_implemented`` of an operation not offered."""
    if response.status_code < 500:
        return None
    offered = case.operation.path not in NOT_OFFERED
    if response.status_code == 501 and not offered and orjson.loads(response.content).get("code") == "not_implemented":
        return None
    raise AssertionError(f"server error {response.status_code}: {response.content[:300]!r}")


def in_surface_format(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every response carries the request id; every error is in its surface's format; 429/503 say when to retry."""
    if REQUEST_ID.lower() not in {k.lower() for k in response.headers}:
        raise AssertionError(f"no {REQUEST_ID} header")
    if response.status_code < 400:
        return None
    content_type = ",".join(response.headers.get("content-type", []))
    if "application/json" not in content_type:
        raise AssertionError(f"error {response.status_code} is {content_type!r}, not JSON: {response.content[:200]!r}")
    if case.method.upper() == "HEAD":  # an answer to HEAD has no body (HTTP): its status and headers are the answer
        return None
    surface = surface_of(case.operation.path)
    wrong = _error_fields(surface, orjson.loads(response.content))
    if wrong:
        raise AssertionError(f"{surface} error body out of format ({'; '.join(wrong)}): {response.content[:300]!r}")
    if response.status_code in RETRY_STATUSES and not response.headers.get("retry-after"):
        raise AssertionError(f"{response.status_code} without Retry-After")
    return None


def _cap_token_counts(value: Any) -> None:
    """Lower every valid token count above ``FAKE_TOKEN_CAP`` in a generated body, in place (see the docstring)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TOKEN_COUNTS and type(item) is int and (item > FAKE_TOKEN_CAP or item in (-1, -2)):
                value[key] = FAKE_TOKEN_CAP
            else:
                _cap_token_counts(item)
    elif isinstance(value, list):
        for item in value:
            _cap_token_counts(item)


@schema.parametrize()
def test_every_operation_answers_below_500_in_its_surface_format(case: Any) -> None:
    _cap_token_counts(case.body)
    case.call_and_validate(checks=[below_500, in_surface_format], timeout=CALL_TIMEOUT)
