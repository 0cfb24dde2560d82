"""Native (Ollama) wire models: every number a client sends is bounded, and the error names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared_ollama.protocol.bounds import INT32_MAX, MAX_CONTEXT, MAX_KEEP_ALIVE_SECONDS
from shared_ollama.protocol.native import ChatRequest, EmbedRequest, GenerateRequest, LegacyEmbeddingsRequest
from tests.support.protocol import chat, refused_field


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_ctx", 10**9),
        ("num_ctx", MAX_CONTEXT + 1),
        ("num_ctx", 0),
        ("num_predict", 10**12),
        ("num_predict", INT32_MAX + 1),
        ("num_predict", -3),
        ("top_k", -1),
        ("top_k", 2**40),
        ("seed", 2**63),
        ("seed", -(2**63) - 1),
        ("temperature", -0.1),
        ("temperature", 1e39),
        ("top_p", 1.5),
        ("min_p", -0.5),
        ("typical_p", 2),
        ("repeat_penalty", -1),
        ("presence_penalty", -1e39),
        ("frequency_penalty", 1e39),
        ("repeat_last_n", -2),
        ("repeat_last_n", 10**9),
        ("num_keep", 10**9),
        ("num_batch", 0),
        ("num_batch", 10**9),
        ("num_thread", 10**6),
        ("mirostat", 3),
        ("mirostat_tau", -1),
        ("mirostat_eta", 1e39),
    ],
)
def test_known_numeric_options_are_bounded(option: str, value: float) -> None:
    assert refused_field(ChatRequest, chat(options={option: value})) == f"options.{option}"
    generate = {"model": "m", "prompt": "x", "options": {option: value}}
    assert refused_field(GenerateRequest, generate) == f"options.{option}"
    embed = {"model": "m", "input": "x", "options": {option: value}}
    assert refused_field(EmbedRequest, embed) == f"options.{option}"


def test_values_within_range_pass_with_ollamas_special_values() -> None:
    options = {
        "num_predict": -2,
        "num_ctx": MAX_CONTEXT,
        "seed": -1,
        "temperature": 0,
        "top_k": 0,
        "top_p": 1,
        "repeat_last_n": -1,
        "num_keep": -1,
        "mirostat": 2,
        "frequency_penalty": -1.5,
        "num_thread": 0,
    }
    body = ChatRequest.model_validate(chat(options=options)).to_engine()
    assert body["options"] == options
    assert ChatRequest.model_validate(chat(options={"num_predict": -1})).to_engine()["options"]["num_predict"] == -1
    assert ChatRequest.model_validate(chat(options={"num_predict": INT32_MAX})).to_engine()["options"] == {
        "num_predict": INT32_MAX
    }


def test_unknown_options_still_pass_through() -> None:
    body = ChatRequest.model_validate(chat(options={"num_gpu": 99, "fake_gate": "g", "use_mmap": False}))
    assert body.to_engine()["options"] == {"num_gpu": 99, "fake_gate": "g", "use_mmap": False}


@pytest.mark.parametrize("value", [MAX_KEEP_ALIVE_SECONDS + 1, -(MAX_KEEP_ALIVE_SECONDS + 1), 1e30])
def test_numeric_keep_alive_is_bounded(value: float) -> None:
    assert refused_field(ChatRequest, chat(keep_alive=value)) == "keep_alive"
    assert refused_field(EmbedRequest, {"model": "m", "input": "x", "keep_alive": value}) == "keep_alive"
    assert refused_field(LegacyEmbeddingsRequest, {"model": "m", "prompt": "x", "keep_alive": value}) == "keep_alive"


@pytest.mark.parametrize("value", [-1, 0, 300, 2.5, "5m", "-1", "24h"])
def test_usual_keep_alives_pass(value: object) -> None:
    assert ChatRequest.model_validate(chat(keep_alive=value)).to_engine()["keep_alive"] == value


def test_generate_context_and_embedding_dimensions_are_bounded() -> None:
    assert refused_field(GenerateRequest, {"model": "m", "prompt": "x", "context": [1, 2**40]}) == "context.1"
    assert refused_field(GenerateRequest, {"model": "m", "prompt": "x", "context": [-1]}) == "context.0"
    assert refused_field(EmbedRequest, {"model": "m", "input": "x", "dimensions": 10**9}) == "dimensions"
    assert EmbedRequest.model_validate({"model": "m", "input": "x", "dimensions": 384}).dimensions == 384


@pytest.mark.parametrize("think", [True, False, "low", "medium", "high", "max"])
def test_think_is_a_boolean_or_a_level(think: object) -> None:
    assert ChatRequest.model_validate(chat(think=think)).to_engine()["think"] == think
    assert GenerateRequest.model_validate({"model": "m", "prompt": "p", "think": think}).to_engine()["think"] == think


def test_bad_think_and_logprobs_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as bad_think:
        ChatRequest.model_validate(chat(think="hard"))
    assert {str(e["loc"][0]) for e in bad_think.value.errors()} == {"think"}
    assert refused_field(ChatRequest, chat(logprobs=True, top_logprobs=21)) == "top_logprobs"
    with pytest.raises(ValueError, match="top_logprobs needs logprobs: true"):
        ChatRequest.model_validate(chat(top_logprobs=2))
    body = ChatRequest.model_validate(chat(logprobs=True, top_logprobs=2)).to_engine()
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
