"""A GGUF file's architecture from its first bytes, and whether llama.cpp can load it.

GGUF (v2, v3) begins ``GGUF``, a version (u32), the tensor and key-value counts (u64 each), then the key-values:
a key (u64 length + UTF-8), a value type (u32) and the value. ``general.architecture`` comes first in files
written by llama.cpp's and Ollama's converters, so the first megabyte of a download tells what it is; the rest
of the file need not be fetched to refuse a model llama.cpp cannot run. (Read with ``engine/gguf_read.py``'s
cursor.)

The architectures llama.cpp loads are the ones the ``gguf`` package (pinned with xllamacpp, generated from
llama.cpp's own list) names, except ``clip``, which is a projector's, never a model's.
"""

from __future__ import annotations

from functools import cache

from shared_ollama.engine.gguf_read import STRING, Cursor, NotGGUF, TruncatedGGUF

HEADER_BYTES = 1 << 20
"""How much of a model file is read (at most) before its architecture must be known."""
_ARCH_KEY = "general.architecture"
_NOT_MODELS = frozenset({"clip"})


@cache
def llama_cpp_architectures() -> frozenset[str]:
    """The model architectures llama.cpp knows (from the ``gguf`` package pinned with it)."""
    from gguf import MODEL_ARCH_NAMES

    return frozenset(MODEL_ARCH_NAMES.values()) - _NOT_MODELS


def architecture(prefix: bytes) -> str | None:
    """``general.architecture`` of the GGUF starting with ``prefix``; None when the prefix ends before it (or
    the file has none). Raises NotGGUF for bytes that are not a GGUF v2/v3 header."""
    if len(prefix) < 24:
        if prefix and not b"GGUF".startswith(prefix[:4]):
            raise NotGGUF("not a GGUF file (no GGUF magic)")
        return None
    cursor = Cursor(prefix)
    _, count = cursor.start()
    try:
        for _ in range(count):
            key = cursor.string("replace")
            kind = cursor.u32()
            if key == _ARCH_KEY and kind == STRING:
                return cursor.string("replace")
            cursor.skip_value(kind)
    except TruncatedGGUF:
        return None
    return None


def unsupported(arch: str) -> str | None:
    """Why llama.cpp cannot run a model of ``arch``; None when it can."""
    if arch in llama_cpp_architectures():
        return None
    if arch in _NOT_MODELS:
        return f"the file is a multimodal projector ({arch}), not a model"
    return (
        f"architecture '{arch}' is not one llama.cpp can load (some models in Ollama's registry run only on "
        "Ollama's own engine); use a real Ollama for it, or a GGUF of the model from Hugging Face"
    )
