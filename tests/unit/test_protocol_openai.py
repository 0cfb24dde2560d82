"""OpenAI wire models: every number a client sends is bounded, and the error names the field."""

from __future__ import annotations

import pytest

from shared_ollama.protocol.bounds import INT32_MAX
from shared_ollama.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from tests.support.protocol import chat, refused_field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_completion_tokens", 10**12),
        ("max_completion_tokens", INT32_MAX + 1),
        ("max_completion_tokens", 0),
        ("max_tokens", 10**12),
        ("max_tokens", -5),
        ("n", 2),
        ("n", 10**12),
        ("seed", 2**63),
        ("seed", -(2**63) - 1),
        ("temperature", 2.5),
        ("temperature", -1),
        ("top_p", 1.01),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
    ],
)
def test_chat_completion_numbers_are_bounded(field: str, value: float) -> None:
    assert refused_field(ChatCompletionRequest, chat(**{field: value})) == field


@pytest.mark.parametrize(("field", "value"), [("max_tokens", 10**12), ("seed", 2**64), ("temperature", 3)])
def test_completion_numbers_are_bounded(field: str, value: float) -> None:
    assert refused_field(CompletionRequest, {"model": "m", "prompt": "x", field: value}) == field


def test_values_within_range_pass() -> None:
    req = ChatCompletionRequest.model_validate(
        chat(max_completion_tokens=INT32_MAX, max_tokens=1, seed=-(2**63), temperature=2, top_p=0, n=1)
    )
    assert req.max_completion_tokens == INT32_MAX
    assert req.seed == -(2**63)


def test_embedding_dimensions_are_bounded() -> None:
    assert refused_field(EmbeddingRequest, {"model": "m", "input": "x", "dimensions": 10**9}) == "dimensions"
    assert refused_field(EmbeddingRequest, {"model": "m", "input": "x", "dimensions": 0}) == "dimensions"
    assert EmbeddingRequest.model_validate({"model": "m", "input": "x", "dimensions": 256}).dimensions == 256
