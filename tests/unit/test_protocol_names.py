"""The one model-name normaliser."""

from __future__ import annotations

import pytest

from shared_ollama.protocol.names import canonical_model


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("all-minilm", "all-minilm:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("library/qwen3", "library/qwen3:latest"),
        ("registry.local:5000/ns/model", "registry.local:5000/ns/model:latest"),
        ("registry.local:5000/ns/model:q4", "registry.local:5000/ns/model:q4"),
        ("hf.co/owner/repo:Q8_0", "hf.co/owner/repo:Q8_0"),
    ],
)
def test_a_name_without_a_tag_is_latest_and_a_port_is_not_a_tag(name: str, canonical: str) -> None:
    assert canonical_model(name) == canonical
    assert canonical_model(canonical) == canonical
