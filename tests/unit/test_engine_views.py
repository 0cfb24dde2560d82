"""How the engine shows its models: /api/ps bodies."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from shared_ollama.engine.runtime import LoadedModel
from shared_ollama.engine.views import running
from tests.support.engine import entry


def test_ps_says_the_size_is_an_estimate() -> None:
    info = {
        "llama.block_count": 2,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.embedding_length": 64,
    }
    with ThreadPoolExecutor(max_workers=1) as executor:
        model = LoadedModel(entry(family="llama", size=1000, model_info=info), None, 512, 0, executor, slots=2)
        shown = running(model)
    assert shown["size"] == model.memory_estimate > 1000  # Ollama's field, as clients read it: weights + KV cache
    assert shown["size_estimated"] is True, "computed from metadata, not measured: /api/ps must say so"
    assert shown["size_vram"] == 0
    assert (shown["requests"], shown["generations"]) == (0, 0)
