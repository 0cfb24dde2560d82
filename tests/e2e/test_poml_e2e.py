"""A POML template on ``/api/v1/chat`` against the real engine: rendered (in the sandboxed renderer) to the same
chat as the messages it stands for, so greedy decoding gives the same prompt and the same answer; over plain HTTP
and through the Python client (``Client.chat(model, poml=..., context=...)``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from shared_ollama_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("poml_isolation")]

TEMPLATE = """<poml>
  <system-msg>You are a geography teacher. Answer in one short sentence.</system-msg>
  <human-msg>What is the capital of {{ country }}?</human-msg>
</poml>"""
MESSAGES = [
    {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
OPTIONS = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=120) as client:
        yield client


def test_a_template_answers_like_the_messages_it_renders_to(http: httpx.Client) -> None:
    common = {"model": "smollm2:135m", "options": OPTIONS, "cache": "off"}
    templated = http.post("/api/v1/chat", json={**common, "poml": TEMPLATE, "context": {"country": "France"}})
    assert templated.status_code == 200, templated.text
    plain = http.post("/api/v1/chat", json={**common, "messages": MESSAGES})
    assert plain.status_code == 200, plain.text
    got, want = templated.json(), plain.json()
    assert got["message"]["role"] == "assistant" and got["message"]["content"].strip()
    assert 0 < got["eval_count"] <= 8
    assert got["prompt_eval_count"] == want["prompt_eval_count"]
    assert got["message"]["content"] == want["message"]["content"]


def test_a_bad_template_is_a_400_naming_poml(http: httpx.Client) -> None:
    resp = http.post("/api/v1/chat", json={"poml": "<poml><human-msg>{{ country }}</human-msg></poml>"})
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_request"
    assert resp.json()["error"].startswith("the poml template could not be rendered: country is not defined")


def test_the_python_client_sends_a_template_and_its_variables(gateway_url: str, http: httpx.Client) -> None:
    common = {"model": "smollm2:135m", "options": OPTIONS, "cache": "off"}
    plain = http.post("/api/v1/chat", json={**common, "messages": MESSAGES})
    assert plain.status_code == 200, plain.text
    with Client(gateway_url, project="poml-client-e2e", timeout=120, max_retry_seconds=30) as client:
        got = client.chat("smollm2:135m", poml=TEMPLATE, context={"country": "France"}, options=OPTIONS, cache="off")
    want = plain.json()
    assert got["prompt_eval_count"] == want["prompt_eval_count"]
    assert got["message"]["content"] == want["message"]["content"]
