"""Capabilities derived from the model: its pooling, projector, chat template and fill-in-the-middle tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from shared_ollama.engine.capabilities import GGUF_FIND, capabilities, fim_tokens, gguf_facts, template_capabilities
from shared_ollama.engine.gguf_read import read_gguf
from tests.support.engine import entry

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""SmolLM2's own chat template (neither tools nor thinking, as Ollama would judge it)."""


@pytest.mark.parametrize(
    ("template", "found"),
    [
        (SMOLLM2_TEMPLATE, []),
        ("{% if tools %}{{ tools | tojson }}{% endif %}", ["tools"]),
        ("{{ '<tool_call>' }}", ["tools"]),
        ("{{ '<think>' }}{{ reasoning }}{{ '</think>' }}", ["thinking"]),
        ("{% set c = message.content.split('</think>')[-1] %}", ["thinking"]),
        ("{% set c = message.content.split('</think>')[-1] %}{{ reasoning_content }}", []),
        ("{% for t in tools %}{% endfor %}<think></think>", ["tools", "thinking"]),
    ],
)
def test_template_capabilities_follow_ollamas_rules(template: str, found: list[str]) -> None:
    assert template_capabilities(template) == found


def test_capabilities_of_models() -> None:
    assert capabilities(entry(chat_template=SMOLLM2_TEMPLATE)) == ["completion"]
    assert capabilities(entry(capabilities=["embedding"], chat_template="<think></think>")) == ["embedding"]
    assert capabilities(entry(projector="sha256:11")) == ["completion", "vision"]
    assert capabilities(entry(fim_tokens=[1, 2, 3])) == ["completion", "insert"]
    thinker = entry(chat_template=SMOLLM2_TEMPLATE, template="<think>{{ x }}</think>{{ tools }}")
    assert capabilities(thinker) == ["completion", "tools", "thinking"], (
        "a derived model's template replaces the file's"
    )


def test_fim_tokens_from_keys_or_token_texts() -> None:
    vocabulary = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "x"]
    assert fim_tokens({}, vocabulary) == [1, 3, 2]
    keys = {
        "tokenizer.ggml.fim_pre_token_id": 4,
        "tokenizer.ggml.fim_suf_token_id": 0,
        "tokenizer.ggml.fim_mid_token_id": 2,
    }
    assert fim_tokens(keys, vocabulary) == [4, 0, 2]
    legacy = {
        "tokenizer.ggml.prefix_token_id": 7,
        "tokenizer.ggml.suffix_token_id": 8,
        "tokenizer.ggml.middle_token_id": 9,
    }
    assert fim_tokens(legacy, []) == [7, 8, 9]
    assert fim_tokens({}, ["<|im_start|>", "<fim_prefix>", "<fim_suffix>"]) == [], "all three are needed"
    assert fim_tokens({"tokenizer.ggml.fim_pre_token_id": 99}, vocabulary) == [1, 3, 2], "an id outside the vocabulary"


def _gguf(path: Path, tokens: list[str], **ints: int) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_chat_template("{{ '<think>' }}{{ '</think>' }}")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    for key, value in ints.items():
        writer.add_uint32(f"tokenizer.ggml.{key}", value)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_facts_read_the_template_and_the_fim_tokens(tmp_path: Path) -> None:
    coder = read_gguf(_gguf(tmp_path / "c.gguf", ["a", "<PRE>", "<SUF>", "<MID>"]), GGUF_FIND)
    assert gguf_facts(coder) == {"chat_template": "{{ '<think>' }}{{ '</think>' }}", "fim_tokens": [1, 2, 3]}
    keyed = _gguf(tmp_path / "k.gguf", ["a", "b", "c", "d"], fim_pre_token_id=3, fim_suf_token_id=2, fim_mid_token_id=1)
    assert gguf_facts(read_gguf(keyed, GGUF_FIND))["fim_tokens"] == [3, 2, 1]
    assert gguf_facts(read_gguf(_gguf(tmp_path / "p.gguf", ["a", "b"]), GGUF_FIND))["fim_tokens"] == []
