"""What a model can do, as Ollama's ``/api/show`` reports it, derived from the model itself.

- ``completion`` or ``embedding``: from the model's pooling (recorded in its manifest at install time);
- ``vision``: the model has a multimodal projector;
- ``tools`` and ``thinking``: from its chat template, by Ollama's rules for Jinja chat templates (a template that
  mentions ``tools`` or ``tool_call`` renders tools; one with ``<think>`` and ``</think>`` separates reasoning);
- ``insert``: its vocabulary has fill-in-the-middle tokens (prefix, suffix and middle), which llama.cpp needs to
  fill in between a prompt and a ``suffix``.

The chat template and the fill-in-the-middle tokens are read from the GGUF file once, when it is installed
(``gguf_facts``); a derived model's own template replaces the file's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared_ollama.engine.gguf_read import GgufHeader
    from shared_ollama.engine.store import ModelEntry

_FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
)
"""GGUF keys naming the prefix, suffix and middle tokens (current names first, then the deprecated ones)."""
_FIM_TEXTS = (
    frozenset(
        {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>"}
    ),
    frozenset(
        {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>"}
    ),
    frozenset(
        {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>"}
    ),
)
"""The token texts llama.cpp recognises as the prefix, suffix and middle tokens when the keys are absent."""
_TEMPLATE_KEY = "tokenizer.chat_template"
VOCABULARY_KEY = "tokenizer.ggml.tokens"
GGUF_FIND: Mapping[str, frozenset[str]] = MappingProxyType({VOCABULARY_KEY: frozenset().union(*_FIM_TEXTS)})
"""What ``gguf_facts`` needs found in a GGUF's arrays (``gguf_read.read_gguf``'s ``find``): the FIM token texts."""


def template_capabilities(template: str) -> list[str]:
    """``tools`` and ``thinking`` as Ollama derives them from a Jinja chat template."""
    found = []
    if "tools" in template or "tool_call" in template:
        found.append("tools")
    split = "content.split('</think>')" in template or 'content.split("</think>")' in template
    if ("<think>" in template and "</think>" in template) or (
        split and "reasoning_content" not in template and "<SPECIAL_12>" not in template
    ):
        found.append("thinking")
    return found


def capabilities(entry: ModelEntry) -> list[str]:
    """The model's capabilities, in Ollama's order: what it is, then vision, then what its template and
    vocabulary allow (a completion model only)."""
    found = list(dict.fromkeys(entry.capabilities))
    if entry.projector and "vision" not in found:
        found.append("vision")
    if "completion" in found:
        found += [c for c in template_capabilities(entry.template or entry.chat_template) if c not in found]
        if entry.fim_tokens and "insert" not in found:
            found.append("insert")
    return found


def fim_tokens(metadata: Mapping[str, Any], vocabulary: Sequence[str]) -> list[int]:
    """The (prefix, suffix, middle) token ids, from the GGUF keys or else the token texts; [] when one is missing."""
    found: list[int | None] = []
    for keys, texts in zip(_FIM_KEYS, _FIM_TEXTS, strict=True):
        value = next((metadata[k] for k in keys if isinstance(metadata.get(k), int)), None)
        if value is None or value < 0 or (vocabulary and value >= len(vocabulary)):
            value = next((i for i, text in enumerate(vocabulary) if text in texts), None)
        found.append(value)
    return [int(v) for v in found if v is not None] if all(v is not None for v in found) else []


def gguf_facts(header: GgufHeader) -> dict[str, Any]:
    """``chat_template`` and ``fim_tokens`` of a GGUF header read with ``find=GGUF_FIND``, for the manifest."""
    # fim_tokens only asks which tokens are FIM texts: the others (not decoded) stand in as "", which none is
    vocabulary = [""] * header.arrays.get(VOCABULARY_KEY, 0)
    for index, text in header.found.get(VOCABULARY_KEY, {}).items():
        vocabulary[index] = text
    template = header.metadata.get(_TEMPLATE_KEY)
    return {
        "chat_template": template if isinstance(template, str) else "",
        "fim_tokens": fim_tokens(header.metadata, vocabulary),
    }
