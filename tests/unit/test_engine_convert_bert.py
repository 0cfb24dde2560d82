"""The sentence-transformers -> GGUF converter, on a tiny synthetic BERT written here."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from shared_ollama.engine.convert_bert import convert_sentence_transformer, phantom_token, wordpiece_vocab

HIDDEN = 8
FFN = 16
LAYERS = 2
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "##s", "world", "!"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer_json(vocab: list[str] = VOCAB) -> dict[str, Any]:
    return {
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "vocab": {t: i for i, t in enumerate(vocab)}},
        "added_tokens": [{"id": vocab.index(t), "content": t, "special": True} for t in SPECIAL],
    }


def bert_weights(rng: np.random.Generator) -> dict[str, np.ndarray[Any, Any]]:
    def r(*shape: int) -> np.ndarray[Any, Any]:
        return rng.standard_normal(shape).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": r(32, HIDDEN),
        "embeddings.token_type_embeddings.weight": r(2, HIDDEN),
        "embeddings.LayerNorm.weight": r(HIDDEN),
        "embeddings.LayerNorm.bias": r(HIDDEN),
        "embeddings.position_ids": np.arange(32, dtype=np.int64)[None, :],
        "pooler.dense.weight": r(HIDDEN, HIDDEN),
        "pooler.dense.bias": r(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            w[f"{p}.{part}.weight"] = r(HIDDEN, HIDDEN)
            w[f"{p}.{part}.bias"] = r(HIDDEN)
        w[f"{p}.intermediate.dense.weight"] = r(FFN, HIDDEN)
        w[f"{p}.intermediate.dense.bias"] = r(FFN)
        w[f"{p}.output.dense.weight"] = r(HIDDEN, FFN)
        w[f"{p}.output.dense.bias"] = r(HIDDEN)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}.{norm}.weight"] = r(HIDDEN)
            w[f"{p}.{norm}.bias"] = r(HIDDEN)
    return w


def write_model(root: Path, pooling: dict[str, bool] | None = None) -> dict[str, np.ndarray[Any, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": LAYERS,
        "type_vocab_size": 2,
        "vocab_size": len(VOCAB),
    }
    (root / "config.json").write_text(json.dumps(config))
    (root / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"pooling_mode_mean_tokens": True}))
    weights = bert_weights(np.random.default_rng(0))
    save_file(weights, str(root / "model.safetensors"))
    return weights


def field(reader: gguf.GGUFReader, key: str) -> Any:
    found = reader.get_field(key)
    assert found is not None, key
    return found.contents()


def test_phantom_token_spelling() -> None:
    assert phantom_token("hello", control=False) == "\u2581hello"
    assert phantom_token("##s", control=False) == "s"
    assert phantom_token("[CLS]", control=True) == "[CLS]"
    assert phantom_token("#", control=False) == "\u2581#"
    assert phantom_token("##", control=False) == ""


def test_wordpiece_vocab_types_and_padding() -> None:
    tokens, types = wordpiece_vocab(tokenizer_json(), vocab_size=len(VOCAB) + 2)
    assert tokens[:9] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581hello", "s", "\u2581world", "\u2581!"]
    assert types[:5] == [gguf.TokenType.CONTROL] * 5
    assert types[5:9] == [gguf.TokenType.NORMAL] * 4
    assert tokens[9:] == ["[PAD9]", "[PAD10]"]
    assert types[9:] == [gguf.TokenType.UNUSED] * 2


def test_wordpiece_vocab_refuses_other_models() -> None:
    with pytest.raises(ValueError, match="WordPiece"):
        wordpiece_vocab({"model": {"type": "BPE", "vocab": {}}}, vocab_size=0)


def test_metadata_and_tensors(tmp_path: Path) -> None:
    weights = write_model(tmp_path / "model")
    out = tmp_path / "out" / "tiny.gguf"
    convert_sentence_transformer(tmp_path / "model", out)

    reader = gguf.GGUFReader(out)
    assert field(reader, "general.architecture") == "bert"
    assert field(reader, "general.name") == "tiny"
    assert field(reader, "bert.context_length") == 32
    assert field(reader, "bert.embedding_length") == HIDDEN
    assert field(reader, "bert.feed_forward_length") == FFN
    assert field(reader, "bert.block_count") == LAYERS
    assert field(reader, "bert.attention.head_count") == 2
    assert field(reader, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)
    assert field(reader, "bert.attention.causal") is False
    assert field(reader, "bert.pooling_type") == gguf.PoolingType.MEAN
    assert field(reader, "tokenizer.ggml.model") == "bert"
    assert field(reader, "tokenizer.ggml.token_type_count") == 2
    assert field(reader, "tokenizer.ggml.tokens")[5:7] == ["\u2581hello", "s"]
    assert field(reader, "tokenizer.ggml.token_type")[:6] == [3, 3, 3, 3, 3, 1]
    assert field(reader, "tokenizer.ggml.bos_token_id") == 2
    assert field(reader, "tokenizer.ggml.seperator_token_id") == 3
    assert field(reader, "tokenizer.ggml.padding_token_id") == 0
    assert field(reader, "tokenizer.ggml.unknown_token_id") == 1
    assert field(reader, "tokenizer.ggml.mask_token_id") == 4
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.ggml.add_sep_token") is True
    assert field(reader, "tokenizer.ggml.add_eos_token") is False

    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 5 + LAYERS * 16  # no pooler, no position_ids
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    for small in ("position_embd.weight", "token_types.weight", "blk.0.attn_q.bias", "token_embd_norm.weight"):
        assert tensors[small].tensor_type == gguf.GGMLQuantizationType.F32, small
    np.testing.assert_array_equal(
        np.asarray(tensors["blk.1.ffn_up.weight"].data),
        weights["encoder.layer.1.intermediate.dense.weight"].astype(np.float16),
    )
    np.testing.assert_array_equal(
        np.asarray(tensors["blk.0.layer_output_norm.bias"].data), weights["encoder.layer.0.output.LayerNorm.bias"]
    )
    assert [p.name for p in out.parent.iterdir()] == ["tiny.gguf"]  # no temp file left behind


def test_zip_source_matches_directory_and_f32_option(tmp_path: Path) -> None:
    write_model(tmp_path / "model")
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((tmp_path / "model").rglob("*")):
            if path.is_file():
                zf.write(path, f"inner/{path.relative_to(tmp_path / 'model').as_posix()}")
    convert_sentence_transformer(tmp_path / "model", tmp_path / "a.gguf", name="m")
    convert_sentence_transformer(archive, tmp_path / "b.gguf", name="m")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()

    convert_sentence_transformer(archive, tmp_path / "c.gguf", float16=False)
    reader = gguf.GGUFReader(tmp_path / "c.gguf")
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32


def test_cls_pooling_and_unsupported_pooling(tmp_path: Path) -> None:
    write_model(tmp_path / "cls", pooling={"pooling_mode_cls_token": True})
    convert_sentence_transformer(tmp_path / "cls", tmp_path / "cls.gguf")
    assert field(gguf.GGUFReader(tmp_path / "cls.gguf"), "bert.pooling_type") == gguf.PoolingType.CLS

    write_model(tmp_path / "max", pooling={"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="pooling"):
        convert_sentence_transformer(tmp_path / "max", tmp_path / "max.gguf")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["cls.gguf"]


def test_failure_keeps_previous_output(tmp_path: Path) -> None:
    write_model(tmp_path / "model")
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError, match="truncated"):
        convert_sentence_transformer(tmp_path / "model", out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.gguf"]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        convert_sentence_transformer(tmp_path / "nothing", tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []
