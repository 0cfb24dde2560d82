"""Pure conversions: Ollama requests to llama.cpp's OpenAI-shaped requests (results back: test_engine_answers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared_ollama.engine.store import ModelEntry
from shared_ollama.engine.translate import (
    TranslationError,
    chat_request,
    check_options,
    check_request,
    generate_request,
    infill_prompt,
    logprob_fields,
    sampling,
    top_logprobs,
)
from tests.support.engine import entry


def model(**fields: Any) -> ModelEntry:
    values: dict[str, Any] = {"name": "m:latest", "digest": "sha256:00", "size": 1, "capabilities": ["completion"]}
    values.update(fields)
    return ModelEntry(**values)


USER = {"role": "user", "content": "Capital of France?"}
RESULT = {
    "choices": [{"message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    "timings": {"prompt_n": 12, "prompt_ms": 4.5, "predicted_n": 3, "predicted_ms": 30.25},
}


def test_options_map_to_llama_sampling() -> None:
    options = {
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40.0,
        "min_p": 0.05,
        "seed": 7,
        "num_predict": 16,
        "stop": ["\n\n"],
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "num_ctx": 2048,
    }
    out = sampling(options, None)
    assert out == {
        "temperature": 0,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "seed": 7,
        "stop": ["\n\n"],
        "max_tokens": 16,
        "repeat_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }
    assert isinstance(out["top_k"], int)


@pytest.mark.parametrize("num_predict", [-1, -2, None])
def test_unbounded_num_predict_sets_no_limit(num_predict: int | None) -> None:
    assert "max_tokens" not in sampling({"num_predict": num_predict}, None)


def test_formats_become_response_formats() -> None:
    assert sampling({}, "json")["response_format"] == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert sampling({}, schema)["response_format"] == {"type": "json_schema", "json_schema": {"schema": schema}}
    assert "response_format" not in sampling({}, "")
    with pytest.raises(TranslationError):
        sampling({}, "yaml")


@pytest.mark.parametrize(
    "options",
    [[1], "hot", {"temperature": "hot"}, {"num_predict": "5"}, {"seed": True}, {"stop": [1]}, {"num_ctx": []}],
)
def test_badly_typed_options_are_rejected(options: Any) -> None:
    with pytest.raises(TranslationError):
        check_options(options)


def test_unknown_options_pass_validation() -> None:
    assert check_options({"num_gpu": 1, "whatever": "x"}) == {"num_gpu": 1, "whatever": "x"}
    assert check_options(None) == {}


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", {"messages": "hi"}),
        ("chat", {"messages": ["hi"]}),
        ("chat", {"messages": [{"role": "user", "content": 5}]}),
        ("chat", {"messages": [{"role": "user", "content": "x", "images": "AAAA"}]}),
        ("chat", {"messages": [{"role": "assistant", "tool_calls": [{"name": "f"}]}]}),
        ("chat", {"messages": [], "tools": "f"}),
        ("chat", {"messages": [], "stream": "yes"}),
        ("chat", {"messages": [], "format": 3}),
        ("generate", {"prompt": ["a"]}),
        ("generate", {"prompt": "a", "system": 1}),
        ("generate", {"prompt": "a", "raw": "yes"}),
        ("generate", {"prompt": "a", "images": [1]}),
        ("generate", {"prompt": "a", "options": {"top_k": "many"}}),
    ],
)
def test_malformed_requests_are_rejected(kind: str, body: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        check_request(kind, body)


def test_well_formed_requests_pass() -> None:
    check_request("chat", {"messages": [USER], "options": {"temperature": 0}, "format": "json", "stream": False})
    check_request("generate", {"prompt": "x", "images": ["AAAA"], "format": {"type": "object"}})


def test_chat_applies_the_model_system_messages_and_parameters() -> None:
    entry = model(
        system="Be terse.",
        parameters={"temperature": 0.1, "num_predict": 9, "stop": ["<end>"]},
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    )
    out = chat_request({"messages": [USER], "options": {"num_predict": 3}}, entry)
    assert [m["content"] for m in out["messages"]] == ["Be terse.", "Hi", "Hello", USER["content"]]
    assert out["temperature"] == 0.1
    assert out["max_tokens"] == 3  # the request wins over the model's parameters
    assert out["stop"] == ["<end>"]


def test_a_request_system_message_replaces_the_model_system() -> None:
    out = chat_request({"messages": [{"role": "system", "content": "Own."}, USER]}, model(system="Model's."))
    assert [m["content"] for m in out["messages"]] == ["Own.", USER["content"]]


def test_images_need_a_projector() -> None:
    with_image = {"messages": [{**USER, "images": ["iVBORw0KGgo="]}]}
    with pytest.raises(TranslationError, match="does not support images"):
        chat_request(with_image, model())
    with pytest.raises(TranslationError, match="does not support images"):
        generate_request({"prompt": "?", "images": ["iVBORw0KGgo="]}, model())
    parts = chat_request(with_image, model(projector="sha256:11", capabilities=["completion", "vision"]))
    content = parts["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": USER["content"]}
    assert content[1]["image_url"]["url"].endswith("base64,iVBORw0KGgo=")


def test_tools_pass_through_and_tool_history_becomes_openai() -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    history = [
        USER,
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"c": 1}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]
    out = chat_request({"messages": history, "tools": tools}, model())
    assert out["tools"] == tools
    call = out["messages"][1]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"] == {"name": "weather", "arguments": '{"c":1}'}
    assert out["messages"][2] == {"role": "tool", "content": "sunny", "name": "weather"}


def test_generate_uses_the_chat_template_unless_raw() -> None:
    method, templated = generate_request({"prompt": "Hi", "options": {"seed": 1}}, model(system="S"))
    assert method == "handle_chat_completions"
    assert templated["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert templated["seed"] == 1
    method, own = generate_request({"prompt": "Hi", "system": "Mine"}, model(system="S"))
    assert own["messages"][0] == {"role": "system", "content": "Mine"}
    method, raw = generate_request({"prompt": "<|im_start|>user", "raw": True}, model(system="S"))
    assert method == "handle_completions"
    assert raw["prompt"] == "<|im_start|>user"
    assert "messages" not in raw


def test_sampling_options_and_formats() -> None:
    out = sampling({"temperature": 0, "top_k": 5, "num_predict": 7, "stop": "END", "seed": 3}, "json")
    assert out == {
        "temperature": 0,
        "top_k": 5,
        "seed": 3,
        "stop": ["END"],
        "max_tokens": 7,
        "response_format": {"type": "json_object"},
    }
    schema = {"type": "object"}
    assert sampling({"num_predict": -1}, schema) == {
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}
    }
    with pytest.raises(TranslationError):
        sampling({}, "yaml")


def test_chat_request_applies_the_models_system_and_parameters() -> None:
    model = entry(system="Be terse.", parameters={"temperature": 0.1, "num_predict": 9})
    out = chat_request({"messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}}, model)
    assert out["messages"] == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    assert out["temperature"] == 0.1
    assert out["max_tokens"] == 3
    own_system = chat_request(
        {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}, model
    )
    assert [m["content"] for m in own_system["messages"]] == ["x", "y"]


def test_images_need_a_vision_model() -> None:
    with pytest.raises(TranslationError, match="does not support images"):
        chat_request({"messages": [{"role": "user", "content": "?", "images": ["AAAA"]}]}, entry())
    vision = entry(projector="sha256:11")
    out = chat_request({"messages": [{"role": "user", "content": "?", "images": ["AAAA"]}]}, vision)
    assert out["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,AAAA"},
    }


def test_generate_raw_and_templated() -> None:
    method, raw = generate_request({"prompt": "The sky", "raw": True}, entry())
    assert (method, raw["prompt"]) == ("handle_completions", "The sky")
    method, templated = generate_request({"prompt": "Hi", "system": "S"}, entry())
    assert method == "handle_chat_completions"
    assert templated["messages"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]


def test_tool_call_history_becomes_openai_calls() -> None:
    history = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    out = chat_request({"messages": [history]}, entry())
    assert out["messages"][0]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":1}'}


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("template", "{{ .Prompt }}", "template"),
        ("context", [1, 2], "context"),
    ],
)
def test_generate_fields_this_engine_cannot_honour_are_refused_by_name(field: str, value: object, words: str) -> None:
    with pytest.raises(TranslationError, match=words):
        check_request("generate", {"model": "m", "prompt": "p", field: value})
    check_request("generate", {"model": "m", "prompt": "p", field: "" if isinstance(value, str) else []})


THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
    "{% endif %}"
)
"""A Jinja chat template with Ollama's thinking markers: the model has the ``thinking`` capability."""
ASK = {"model": "thinker:1", "messages": [USER]}


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (True, {"chat_template_kwargs": {"enable_thinking": True}}),
        ("high", {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"}),
        ("max", {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "max"}),
        (False, {"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "none"}),
        (None, {}),
    ],
)
def test_think_becomes_llama_reasoning_controls_on_a_thinking_model(think: object, fields: dict[str, Any]) -> None:
    thinker = model(template=THINKING_TEMPLATE)
    out = chat_request({**ASK, "think": think}, thinker)
    assert {k: out[k] for k in ("chat_template_kwargs", "reasoning_effort") if k in out} == fields
    method, generated = generate_request({"model": "thinker:1", "prompt": "Why?", "think": think}, thinker)
    assert method == "handle_chat_completions"
    assert {k: generated[k] for k in ("chat_template_kwargs", "reasoning_effort") if k in generated} == fields


def test_a_model_that_cannot_think_is_told_so_and_false_asks_nothing() -> None:
    plain = model()  # no template with thinking markers
    for think in (True, "low"):
        with pytest.raises(TranslationError, match=r'^"smollm2:135m" does not support thinking$'):
            chat_request({"model": "smollm2:135m", "messages": [USER], "think": think}, plain)
        with pytest.raises(TranslationError, match="does not support thinking"):
            generate_request({"model": "smollm2:135m", "prompt": "p", "think": think, "raw": True}, plain)
    out = chat_request({"messages": [USER], "think": False}, plain)
    assert "chat_template_kwargs" not in out and "reasoning_effort" not in out


def test_earlier_thinking_goes_back_as_reasoning_content() -> None:
    answer = {"role": "assistant", "content": "Paris.", "thinking": "France's capital..."}
    out = chat_request({"messages": [USER, answer]}, model())
    assert out["messages"][1] == {"role": "assistant", "content": "Paris.", "reasoning_content": "France's capital..."}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"think": "extreme"}, "invalid think value"),
        ({"think": 1}, "invalid think value"),
        ({"logprobs": "yes"}, "logprobs must be a boolean"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs must be between 0 and 20"),
        ({"top_logprobs": 3}, "top_logprobs needs logprobs: true"),
    ],
)
def test_bad_think_and_logprobs_values_are_refused(body: dict[str, Any], words: str) -> None:
    for kind, base in (("chat", {"messages": [USER]}), ("generate", {"prompt": "p"})):
        with pytest.raises(TranslationError, match=words):
            check_request(kind, {**base, **body})


def test_logprobs_ask_llama_for_at_least_one_alternative() -> None:
    assert logprob_fields({}, chat=True) == {}
    assert logprob_fields({"logprobs": True}, chat=True) == {"logprobs": True, "top_logprobs": 1}
    assert logprob_fields({"logprobs": True, "top_logprobs": 5}, chat=True) == {"logprobs": True, "top_logprobs": 5}
    assert logprob_fields({"logprobs": True, "top_logprobs": 3}, chat=False) == {"logprobs": 3}
    assert (
        top_logprobs({}),
        top_logprobs({"logprobs": True}),
        top_logprobs({"logprobs": True, "top_logprobs": 4}),
    ) == (
        None,
        0,
        4,
    )
    chat = chat_request({"messages": [USER], "logprobs": True, "top_logprobs": 2}, model())
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 2)
    _, raw = generate_request({"prompt": "p", "raw": True, "logprobs": True}, model())
    assert raw["logprobs"] == 1


def test_suffix_needs_fill_in_the_middle_tokens() -> None:
    with pytest.raises(TranslationError, match=r'^"smollm2:135m" does not support insert \(suffix\)$'):
        generate_request({"model": "smollm2:135m", "prompt": "def f(", "suffix": "):"}, model())
    coder = model(fim_tokens=[7, 8, 9])
    method, out = generate_request({"prompt": "def f(", "suffix": "):\n", "logprobs": True}, coder)
    assert method == "handle_completions"
    assert out["prompt"] == [7, "def f(", 8, "):\n", 9]  # prefix-suffix-middle, as llama.cpp's infill
    assert out["logprobs"] == 1
    assert "messages" not in out


def test_a_fill_in_the_middle_prompt_starts_with_bos_when_the_model_adds_one() -> None:
    info = {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": 1}
    assert infill_prompt("a", "b", model(fim_tokens=[7, 8, 9], model_info=info)) == [1, 7, "a", 8, "b", 9]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"raw": True, "system": "S"}, "raw mode does not support template, system, or context"),
        ({"raw": True, "context": [1]}, "raw mode does not support template, system, or context"),
        ({"raw": True, "suffix": "x"}, "raw mode does not support suffix or images"),
        ({"raw": True, "images": ["AAAA"]}, "raw mode does not support suffix or images"),
        ({"suffix": "x", "system": "S"}, "system is not used with suffix"),
    ],
)
def test_generate_fields_that_contradict_each_other_are_refused(body: dict[str, Any], words: str) -> None:
    with pytest.raises(TranslationError, match=words):
        check_request("generate", {"model": "m", "prompt": "p", **body})


@pytest.mark.parametrize("bypass", [{"raw": True}, {"suffix": "end"}])
def test_think_with_raw_or_suffix_is_refused_not_dropped(bypass: dict[str, Any]) -> None:
    thinker = model(template=THINKING_TEMPLATE)
    with pytest.raises(TranslationError, match="think cannot be combined with raw or suffix"):
        generate_request({"model": "thinker:1", "prompt": "Why?", "think": True, **bypass}, thinker)
    method, _ = generate_request({"model": "thinker:1", "prompt": "Why?", "think": False, "raw": True}, thinker)
    assert method == "handle_completions", "think: false asks nothing"
