"""Numeric bounds of the wire models, one place for both surfaces.

Every number a client sends is checked against a range before anything reaches the engine: an unbounded
integer would overflow the engine's 32-bit fields (``max_tokens: 10**12`` came back as a negative number in
the engine's error) or its float32 ones. A value outside its range is a 400 that names the field. The ranges are
generous: they follow the engine's types and Ollama's and OpenAI's documented semantics, not a policy.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

INT32_MAX = 2**31 - 1
"""The largest token count (llama.cpp keeps counts in 32-bit integers)."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
FLOAT32_MAX = 3.4e38
"""Floats the engine keeps as float32 (sampling parameters) stay finite there."""
MAX_CONTEXT = 2**20
"""The largest ``num_ctx`` (and other per-context counts) accepted: about a million tokens."""
MAX_THREADS = 1024
MAX_EMBEDDING_DIMENSIONS = 2**16
MAX_KEEP_ALIVE_SECONDS = INT32_MAX
"""A numeric ``keep_alive`` (seconds; negative keeps the model loaded) within about 68 years either way."""

Probability = Annotated[float, Field(ge=0, le=1)]
"""``top_p``, ``min_p``, ``typical_p``."""
EngineFloat = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
"""A float with no documented range of its own (Ollama's penalties): finite as a float32."""
NonNegativeFloat = Annotated[float, Field(ge=0, le=FLOAT32_MAX)]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""Any 64-bit integer (Ollama's is a Go ``int``; ``-1`` asks for a random one)."""
NumPredict = Annotated[int, Field(ge=-2, le=INT32_MAX)]
"""Tokens to generate: ``-1`` without limit, ``-2`` until the context is full (Ollama), else 0..2**31-1."""
MaxTokens = Annotated[int, Field(ge=1, le=INT32_MAX)]
"""OpenAI's ``max_tokens`` and ``max_completion_tokens``."""
ContextSize = Annotated[int, Field(ge=1, le=MAX_CONTEXT)]
ContextCount = Annotated[int, Field(ge=-1, le=MAX_CONTEXT)]
"""A count of context tokens where ``-1`` means the whole context (``repeat_last_n``, ``num_keep``)."""
TopK = Annotated[int, Field(ge=0, le=INT32_MAX)]
TokenId = Annotated[int, Field(ge=0, le=INT32_MAX)]
Dimensions = Annotated[int, Field(ge=1, le=MAX_EMBEDDING_DIMENSIONS)]


def _keep_alive(value: str | int | float) -> str | int | float:
    if isinstance(value, int | float) and abs(value) > MAX_KEEP_ALIVE_SECONDS:
        bound = MAX_KEEP_ALIVE_SECONDS
        raise ValueError(f"keep_alive in seconds must be between -{bound} and {bound}")
    return value


KeepAlive = Annotated[str | int | float, AfterValidator(_keep_alive)]
"""Seconds (negative: keep loaded) within ``MAX_KEEP_ALIVE_SECONDS`` either way, or a duration string (the
engine parses it)."""
