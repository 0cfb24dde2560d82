"""Current Ollama parity through the gateway, on the real embedded engine, with the official clients.

``think``, log probabilities, ``/api/embed`` dimensions and truncation, the generate fields (``suffix``, ``raw``,
``template``, ``system``, ``context``), ``tool_choice`` on ``/v1/chat/completions``, ``/api/ps`` and ``/api/show``
fields, and ``/api/push``: each checked on what the engine did. The gateway runs on a store of its own: SmolLM2 and
all-MiniLM (blobs linked), a model derived from SmolLM2 with a thinking chat template (made through ``/api/create``),
and a copy of SmolLM2 whose metadata names fill-in-the-middle tokens (``tests/support/fim_model.py``).

Requests are sent with the cache off: a repeated request must reach the engine, not a stored answer.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from shared_ollama.engine.machine import gpu_devices
from shared_ollama.engine.store import ModelStore
from tests.e2e.conftest import start_gateway
from tests.support.fim_model import write_fim_copy
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

CHAT = "smollm2:135m"
EMBED = "all-minilm:latest"
THINKER = "thinker:test"
CODER = "fim-smollm2:test"
NO_CACHE = {"X-Shared-Ollama-Cache": "off"}
OPTIONS = {"num_predict": 16, "temperature": 0, "seed": 1}
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]
THINKING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' and message.get('reasoning_content') -%}"
    "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)
"""SmolLM2's chat format with reasoning markers: the answer starts inside ``<think>`` unless thinking is off."""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def parity_store(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 and all-MiniLM (blobs linked) and the FIM copy of SmolLM2, in a store of this module's own."""
    source = ModelStore(model_store)
    store = ModelStore(tmp_path_factory.mktemp("parity-store"))
    store.blobs.mkdir(parents=True)
    for name in (CHAT, EMBED):
        entry = source.get(name)
        assert entry is not None, f"{name} is missing from {model_store}"
        store.blob_path(entry.digest).symlink_to(source.blob_path(entry.digest).resolve())
        store.put(entry)
    if (source.root / "defaults.json").exists():
        shutil.copyfile(source.root / "defaults.json", store.root / "defaults.json")
    chat = source.get(CHAT)
    assert chat is not None
    scratch = tmp_path_factory.mktemp("fim")
    store.add_gguf(
        CODER, write_fim_copy(source.blob_path(chat.digest), scratch / "fim.gguf"), capabilities=["completion"]
    )
    shutil.rmtree(scratch)
    return store.root


@pytest.fixture(scope="module")
def gateway(parity_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = start_gateway(parity_store, tmp_path_factory.mktemp("parity-gw"), artifacts_dir / "parity-e2e.log")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(gateway: str) -> ollama.Client:
    return ollama.Client(host=gateway, headers=NO_CACHE, timeout=120)


@pytest.fixture(scope="module")
def oai(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, default_headers=NO_CACHE)


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers=NO_CACHE, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def thinker(client: ollama.Client) -> str:
    """``thinker:test``: SmolLM2 with a chat template that separates reasoning (made through /api/create)."""
    steps = [p.status for p in client.create(THINKER, from_=CHAT, template=THINKING_TEMPLATE, stream=True)]
    assert steps[-1] == "success"
    return THINKER


def _refused(call: Any, status: int = 400) -> str:
    with pytest.raises(ollama.ResponseError) as refused:
        call()
    assert refused.value.status_code == status, refused.value
    return str(refused.value.error)


# ---------------------------------------------------------------- think


def test_thinking_comes_back_apart_from_the_answer(client: ollama.Client, thinker: str) -> None:
    thought = client.chat(model=thinker, messages=QUESTION, think=True, options=OPTIONS)
    assert thought.message.thinking and thought.message.thinking.strip(), thought
    assert "<think>" not in thought.message.thinking + thought.message.content
    plain = client.chat(model=thinker, messages=QUESTION, think=False, options=OPTIONS)
    assert not plain.message.thinking, "thinking off: the template closes the reasoning, all is answer"
    assert plain.message.content.strip()
    streamed = list(client.chat(model=thinker, messages=QUESTION, think=True, options=OPTIONS, stream=True))
    assert sum(1 for c in streamed if c.message.thinking) >= 2, "thinking arrives in the stream's chunks"
    assert "<think>" not in "".join((c.message.thinking or "") + c.message.content for c in streamed)
    assert client.chat(model=thinker, messages=QUESTION, think="high", options=OPTIONS).message.thinking
    generated = client.generate(model=thinker, prompt="Why is the sky blue?", think=True, options=OPTIONS)
    assert generated.thinking and generated.thinking.strip()


def test_a_model_without_the_thinking_capability_refuses_think(client: ollama.Client, http: httpx.Client) -> None:
    error = _refused(lambda: client.chat(model=CHAT, messages=QUESTION, think=True, options=OPTIONS))
    assert error == '"smollm2:135m" does not support thinking'
    assert _refused(lambda: client.generate(model=CHAT, prompt="hi", think="low", options=OPTIONS)) == error
    service = http.post("/api/v1/chat", json={"model": CHAT, "messages": QUESTION, "think": True})
    assert (service.status_code, service.json()["error"]) == (400, error)
    assert client.chat(model=CHAT, messages=QUESTION, think=False, options=OPTIONS).message.content


# ---------------------------------------------------------------- logprobs


def _check_logprobs(logprobs: Any, text: str, top: int) -> None:
    assert logprobs, "log probabilities were asked for"
    assert "".join(lp.token for lp in logprobs) == text, "one entry per generated token, in order"
    for lp in logprobs:
        assert lp.logprob <= 0
        if top:
            assert len(lp.top_logprobs) == top
            assert lp.top_logprobs[0].logprob >= lp.logprob - 1e-6, "the most likely alternative comes first"
        else:
            assert not lp.top_logprobs


def test_chat_and_generate_return_logprobs_of_their_tokens(client: ollama.Client) -> None:
    chat = client.chat(model=CHAT, messages=QUESTION, logprobs=True, top_logprobs=3, options=OPTIONS)
    _check_logprobs(chat.logprobs, chat.message.content, 3)
    chunks = list(client.chat(model=CHAT, messages=QUESTION, logprobs=True, options=OPTIONS, stream=True))
    streamed = [lp for c in chunks for lp in (c.logprobs or [])]
    _check_logprobs(streamed, "".join(c.message.content for c in chunks), 0)
    raw = client.generate(
        model=CHAT, prompt="Once upon a time", raw=True, logprobs=True, top_logprobs=2, options=OPTIONS
    )
    _check_logprobs(raw.logprobs, raw.response, 2)
    templated = client.generate(model=CHAT, prompt="Say hi", logprobs=True, options=OPTIONS)
    _check_logprobs(templated.logprobs, templated.response, 0)
    assert client.chat(model=CHAT, messages=QUESTION, options=OPTIONS).logprobs is None, "only when asked"


def test_openai_chat_completions_return_logprobs(oai: openai.OpenAI) -> None:
    asked = {"model": CHAT, "messages": QUESTION, "max_tokens": 12, "temperature": 0, "seed": 1}
    done = oai.chat.completions.create(**asked, logprobs=True, top_logprobs=2)  # type: ignore[call-overload]
    content = done.choices[0].logprobs.content
    assert b"".join(bytes(t.bytes) for t in content).decode() == done.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    stream = oai.chat.completions.create(**asked, logprobs=True, stream=True)  # type: ignore[call-overload]
    text, tokens = "", b""
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            for token in chunk.choices[0].logprobs.content if chunk.choices[0].logprobs else []:
                tokens += bytes(token.bytes)
    assert tokens.decode() == text and text
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(**asked, top_logprobs=2)  # type: ignore[call-overload]
    assert refused.value.body["param"] == "top_logprobs"  # type: ignore[index]


# ---------------------------------------------------------------- /api/embed


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def test_embed_dimensions_cut_and_renormalise(client: ollama.Client, oai: openai.OpenAI) -> None:
    text = "cats purr when they are content"
    full = client.embed(model=EMBED, input=text).embeddings[0]
    cut = client.embed(model=EMBED, input=text, dimensions=64).embeddings[0]
    assert (len(full), len(cut)) == (384, 64)
    assert abs(_norm(cut) - 1.0) < 1e-5
    head = full[:64]
    expected = [v / _norm(head) for v in head]
    assert max(abs(a - b) for a, b in zip(cut, expected, strict=True)) < 1e-5, "Ollama's cut: the first N, renormalised"
    error = _refused(lambda: client.embed(model=EMBED, input=text, dimensions=1000))
    assert "dimensions 1000" in error and "384" in error
    assert len(oai.embeddings.create(model=EMBED, input=text, dimensions=32).data[0].embedding) == 32


def test_embed_truncates_long_inputs_unless_told_not_to(client: ollama.Client) -> None:
    long = "word " * 2000  # far more than all-MiniLM's 512-token context
    vector = client.embed(model=EMBED, input=long).embeddings[0]
    assert len(vector) == 384 and abs(_norm(vector) - 1.0) < 1e-5
    assert "context length" in _refused(lambda: client.embed(model=EMBED, input=long, truncate=False))
    assert len(client.embed(model=EMBED, input="short", truncate=False).embeddings[0]) == 384


# ---------------------------------------------------------------- /api/generate fields


def test_suffix_fills_in_the_middle_where_the_model_can(client: ollama.Client) -> None:
    prefix, suffix = "def add(a, b):", "    return c\n"
    error = _refused(lambda: client.generate(model=CHAT, prompt=prefix, suffix=suffix, options=OPTIONS))
    assert error == '"smollm2:135m" does not support insert (suffix)'
    alone = [client.generate(model=CODER, prompt=p, raw=True, options={"num_predict": 1}) for p in (prefix, suffix)]
    filled = client.generate(model=CODER, prompt=prefix, suffix=suffix, options={"num_predict": 4, "temperature": 0})
    assert filled.done
    # The engine evaluated prefix token, prompt, suffix token, suffix, middle token: nothing else.
    assert filled.prompt_eval_count == alone[0].prompt_eval_count + alone[1].prompt_eval_count + 3


def test_raw_system_and_refused_generate_fields(client: ollama.Client) -> None:
    raw = client.generate(model=CHAT, prompt="Once upon a time", raw=True, options={"num_predict": 1})
    templated = client.generate(model=CHAT, prompt="Once upon a time", options={"num_predict": 1})
    assert raw.prompt_eval_count < templated.prompt_eval_count, "raw skips the chat template"
    system = "You are a pirate captain sailing the seven seas. Answer every question with the single word ARRR."
    with_system = client.generate(model=CHAT, prompt="Once upon a time", system=system, options={"num_predict": 1})
    assert with_system.prompt_eval_count > templated.prompt_eval_count, "system replaces the model's shorter default"
    error = _refused(lambda: client.generate(model=CHAT, prompt="x", raw=True, system="S"))
    assert error == "raw mode does not support template, system, or context"
    assert "template" in _refused(lambda: client.generate(model=CHAT, prompt="x", template="{{ .Prompt }}"))
    assert "context" in _refused(lambda: client.generate(model=CHAT, prompt="x", context=[1, 2, 3]))


# ---------------------------------------------------------------- tool_choice


def _call(oai: openai.OpenAI, choice: Any, tools: list[dict[str, Any]], content: str, stream: bool = False) -> Any:
    return oai.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": content}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice=choice,
        max_tokens=48,
        temperature=0,
        stream=stream,
    )


def test_tool_choice_required_forces_a_call_the_prompt_never_asked_for(oai: openai.OpenAI) -> None:
    done = _call(oai, "required", [WEATHER], "Tell me a short joke about cats.")
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo", "Lima")


def test_a_named_tool_choice_calls_that_function(oai: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    done = _call(oai, named, [WEATHER, TIME], "What is the weather in Paris?")
    assert [c.function.name for c in done.choices[0].message.tool_calls] == ["get_time"]
    assert json.loads(done.choices[0].message.tool_calls[0].function.arguments) == {}
    events = list(_call(oai, named, [WEATHER, TIME], "What is the weather in Paris?", stream=True))
    calls = [c for e in events if e.choices for c in (e.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_time"]
    assert [e.choices[0].finish_reason for e in events if e.choices and e.choices[0].finish_reason] == ["tool_calls"]


def test_tool_choice_none_never_calls(oai: openai.OpenAI) -> None:
    done = _call(oai, "none", [WEATHER], "What is the weather in Paris? Use the tool.")
    assert not done.choices[0].message.tool_calls
    assert done.choices[0].finish_reason in ("stop", "length")


# ---------------------------------------------------------------- /api/ps, /api/show, /api/push


def test_show_reports_capabilities_from_the_model(client: ollama.Client, thinker: str) -> None:
    assert client.show(CHAT).capabilities == ["completion"]
    assert client.show(EMBED).capabilities == ["embedding"]
    assert client.show(thinker).capabilities == ["completion", "thinking"]
    assert client.show(CODER).capabilities == ["completion", "insert"]


def test_ps_reports_expiry_and_no_vram_on_a_cpu(client: ollama.Client) -> None:
    before = datetime.now(UTC)
    client.chat(model=CHAT, messages=QUESTION, keep_alive="10m", options={"num_predict": 1})
    running = {m.model: m for m in client.ps().models}
    model = running[CHAT]
    if gpu_devices() == 0:
        assert model.size_vram == 0, "no GPU here: nothing is in VRAM"
    assert model.size and model.size > 0
    assert model.expires_at is not None and model.expires_at > before


def test_push_is_not_offered(client: ollama.Client) -> None:
    error = _refused(lambda: client.push(CHAT, stream=False), status=501)
    assert "never publishes models" in error
