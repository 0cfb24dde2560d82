"""Log probabilities between OpenAI's chat shapes and the native ones."""

from __future__ import annotations

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.logprobs import chat_logprobs, logprob_fields

NATIVE = {
    "token": "Hello",
    "logprob": -0.5,
    "bytes": [72, 101, 108, 108, 111],
    "top_logprobs": [
        {"token": "Hello", "logprob": -0.5, "bytes": [72, 101, 108, 108, 111]},
        {"token": "Hi", "logprob": -1.5},
    ],
}


def test_request_fields() -> None:
    body: dict[str, object] = {}
    logprob_fields(None, None, body)
    assert body == {}
    logprob_fields(True, 0, body)
    assert body == {"logprobs": True}
    logprob_fields(True, 2, body)
    assert body == {"logprobs": True, "top_logprobs": 2}
    with pytest.raises(InvalidRequest) as refused:
        logprob_fields(False, 2, {})
    assert refused.value.param == "top_logprobs"


def test_native_logprobs_become_openais_choice_logprobs() -> None:
    assert chat_logprobs({"message": {"content": "x"}}) is None
    assert chat_logprobs({"logprobs": []}) is None
    out = chat_logprobs({"logprobs": [NATIVE, {"token": "!", "logprob": -2.0}]})
    assert out == {
        "content": [
            {
                "token": "Hello",
                "logprob": -0.5,
                "bytes": [72, 101, 108, 108, 111],
                "top_logprobs": [
                    {"token": "Hello", "logprob": -0.5, "bytes": [72, 101, 108, 108, 111]},
                    {"token": "Hi", "logprob": -1.5, "bytes": None},
                ],
            },
            {"token": "!", "logprob": -2.0, "bytes": None, "top_logprobs": []},
        ],
        "refusal": None,
    }
