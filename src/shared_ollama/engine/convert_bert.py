"""Convert a sentence-transformers BERT model (e.g. all-MiniLM-L6-v2) to a GGUF embedding model.

The result uses llama.cpp's ``bert`` architecture with the pooling the sentence-transformers
``1_Pooling`` module declares (mean for MiniLM). Normalisation is not baked in: the engine
applies it at request time (``embd_normalize``).

The source is either the model directory or a zip of it. ``model.safetensors`` is streamed
tensor by tensor straight into the GGUF, so memory stays near the size of the largest tensor
and nothing is extracted to disk. The output is written to a temporary file next to
``out_path`` and renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import gguf
import numpy as np

_CONTINUATION = "##"
_PHANTOM_SPACE = "\u2581"
_READ_CHUNK = 1 << 20

# Tensors the bert graph does not use (sentence embeddings need no pooler or MLM head).
_SKIPPED_PREFIXES = ("pooler.", "cls.predictions", "cls.seq_relationship")
_SKIPPED_NAMES = frozenset({"embeddings.position_ids"})
# Small 2-D tables that stay F32: they are added to activations as whole rows.
_KEEP_F32 = frozenset({"position_embd.weight", "token_types.weight"})

_SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}


@dataclass(frozen=True)
class _TensorPlan:
    """One tensor to copy: where it lies in the safetensors data and what it becomes."""

    gguf_name: str
    shape: tuple[int, ...]
    src_dtype: str
    begin: int
    end: int
    out_dtype: np.dtype[Any]

    @property
    def out_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.out_dtype.itemsize


class _ModelFiles:
    """Uniform read access to the model files, in a directory or in a zip archive."""

    def __init__(self, source: Path, archive: zipfile.ZipFile | None) -> None:
        self._source = source
        self._archive = archive
        self._root = PurePosixPath()
        if archive is not None:
            candidates = [n for n in archive.namelist() if PurePosixPath(n).name == "model.safetensors"]
            if not candidates:
                raise FileNotFoundError(f"no model.safetensors in {source}")
            self._root = PurePosixPath(min(candidates, key=lambda n: n.count("/"))).parent

    def exists(self, name: str) -> bool:
        if self._archive is None:
            return (self._source / name).is_file()
        try:
            self._archive.getinfo(str(self._root / name))
        except KeyError:
            return False
        return True

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if not self.exists(name):
            raise FileNotFoundError(f"{name} not found in {self._source}")
        if self._archive is None:
            with (self._source / name).open("rb") as fh:
                yield fh
        else:
            with self._archive.open(str(self._root / name)) as fh:
                yield fh

    def json(self, name: str) -> Any:
        with self.open(name) as fh:
            return json.loads(fh.read().decode("utf-8"))


@contextlib.contextmanager
def _model_files(source: Path) -> Iterator[_ModelFiles]:
    if source.is_dir():
        yield _ModelFiles(source, None)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            yield _ModelFiles(source, archive)
    else:
        raise FileNotFoundError(f"{source} is neither a model directory nor a zip archive")


def phantom_token(token: str, *, control: bool) -> str:
    """llama.cpp's WordPiece spelling: ``##x`` -> ``x``, word starts get ``▁``, control tokens stay."""
    if control:
        return token
    if token.startswith(_CONTINUATION):
        return token[len(_CONTINUATION) :]
    return _PHANTOM_SPACE + token


def wordpiece_vocab(tokenizer: dict[str, Any], vocab_size: int) -> tuple[list[str], list[int]]:
    """Token texts and ``gguf.TokenType`` values for a ``tokenizer.json`` with a WordPiece model.

    Special added tokens become control tokens; ids the tokenizer leaves unassigned up to
    ``vocab_size`` (the embedding table's row count) are filled with unused placeholders.
    """
    model = tokenizer.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ValueError(f"expected a WordPiece tokenizer, got {model.get('type')!r}")
    by_id: dict[int, tuple[str, bool]] = {int(i): (str(t), False) for t, i in model["vocab"].items()}
    for added in tokenizer.get("added_tokens") or []:
        by_id[int(added["id"])] = (str(added["content"]), bool(added.get("special", False)))
    size = max(vocab_size, max(by_id) + 1)
    tokens: list[str] = []
    types: list[int] = []
    for token_id in range(size):
        entry = by_id.get(token_id)
        if entry is None:
            tokens.append(f"[PAD{token_id}]")
            types.append(int(gguf.TokenType.UNUSED))
            continue
        text, control = entry
        tokens.append(phantom_token(text, control=control))
        types.append(int(gguf.TokenType.CONTROL if control else gguf.TokenType.NORMAL))
    return tokens, types


def _pooling_type(files: _ModelFiles) -> gguf.PoolingType:
    if not files.exists("1_Pooling/config.json"):
        return gguf.PoolingType.MEAN
    cfg = files.json("1_Pooling/config.json")
    if cfg.get("pooling_mode_max_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens"):
        raise ValueError("only mean or CLS pooling can be expressed in GGUF")
    if cfg.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    return gguf.PoolingType.MEAN


def _special_ids(tokenizer: dict[str, Any], files: _ModelFiles) -> dict[str, int]:
    """Ids of the [CLS]/[SEP]/[PAD]/[UNK]/[MASK] tokens, by role."""
    names = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
    if files.exists("tokenizer_config.json"):
        cfg = files.json("tokenizer_config.json")
        for role in names:
            value = cfg.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                names[role] = value
    lookup: dict[str, int] = {str(t): int(i) for t, i in tokenizer["model"]["vocab"].items()}
    lookup.update({str(a["content"]): int(a["id"]) for a in tokenizer.get("added_tokens") or []})
    missing = [text for text in names.values() if text not in lookup]
    if missing:
        raise ValueError(f"special tokens missing from the vocabulary: {missing}")
    return {role: lookup[text] for role, text in names.items()}


def _read_safetensors_header(stream: IO[bytes]) -> tuple[dict[str, Any], int]:
    """The header dict and its size on disk (8-byte length prefix included)."""
    (length,) = struct.unpack("<Q", _read_exact(stream, 8))
    header = json.loads(_read_exact(stream, length).decode("utf-8"))
    return header, 8 + length


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError("truncated model.safetensors")
    return data


def _read_array(stream: IO[bytes], n: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Read ``n`` bytes into one fresh buffer, a chunk at a time (no whole-size temporaries)."""
    buffer = np.empty(n, dtype=np.uint8)
    view = memoryview(buffer)
    filled = 0
    while filled < n:
        chunk = stream.read(min(n - filled, _READ_CHUNK))
        if not chunk:
            raise ValueError("truncated model.safetensors")
        view[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    return buffer


def _skip(stream: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, _READ_CHUNK))
        if not chunk:
            raise ValueError("truncated model.safetensors")
        n -= len(chunk)


def _hf_name(name: str) -> str:
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    elif name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    return name


def _plan_tensors(header: dict[str, Any], n_layers: int, float16: bool) -> list[_TensorPlan]:
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, n_layers)
    plans: list[_TensorPlan] = []
    for raw_name, info in header.items():
        if raw_name == "__metadata__":
            continue
        hf_name = _hf_name(raw_name)
        if hf_name in _SKIPPED_NAMES or hf_name.startswith(_SKIPPED_PREFIXES):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {raw_name!r}")
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"unsupported dtype {info['dtype']} for tensor {raw_name!r}")
        shape = tuple(int(d) for d in info["shape"])
        half = float16 and len(shape) == 2 and gguf_name not in _KEEP_F32
        begin, end = (int(x) for x in info["data_offsets"])
        if end - begin != int(np.prod(shape, dtype=np.int64)) * _SAFETENSORS_DTYPES[info["dtype"]].itemsize:
            raise ValueError(f"tensor {raw_name!r}: data size does not match its shape")
        out_dtype = np.dtype("<f2") if half else np.dtype("<f4")
        plans.append(_TensorPlan(gguf_name, shape, info["dtype"], begin, end, out_dtype))
    plans.sort(key=lambda p: p.begin)
    return plans


def _decode(raw: np.ndarray[Any, np.dtype[np.uint8]], plan: _TensorPlan) -> np.ndarray[Any, Any]:
    array = raw.view(_SAFETENSORS_DTYPES[plan.src_dtype])
    if plan.src_dtype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(plan.out_dtype, copy=False).reshape(plan.shape)


def _add_metadata(
    writer: gguf.GGUFWriter, config: dict[str, Any], name: str, pooling: gguf.PoolingType, float16: bool
) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if float16 else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)


def _add_vocab(writer: gguf.GGUFWriter, tokenizer: dict[str, Any], config: dict[str, Any], files: _ModelFiles) -> None:
    tokens, types = wordpiece_vocab(tokenizer, int(config["vocab_size"]))
    if len(tokens) != int(config["vocab_size"]):
        raise ValueError(f"tokenizer has {len(tokens)} tokens, the model {config['vocab_size']}")
    special = _special_ids(tokenizer, files)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    # [CLS] text [SEP]: llama.cpp's bert vocab puts BOS in front and SEP behind. No EOS is
    # declared: an EOS that is not an end-of-generation token only earns a load warning.
    writer.add_bos_token_id(special["cls"])
    writer.add_sep_token_id(special["sep"])
    writer.add_pad_token_id(special["pad"])
    writer.add_unk_token_id(special["unk"])
    writer.add_mask_token_id(special["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_sep_token(True)


def _check_config(config: dict[str, Any]) -> None:
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"expected a BERT model, got model_type={config.get('model_type')!r}")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported activation {config.get('hidden_act')!r}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"unsupported position embeddings {config.get('position_embedding_type')!r}")


def _write(files: _ModelFiles, path: Path, name: str, float16: bool) -> None:
    config = files.json("config.json")
    _check_config(config)
    tokenizer = files.json("tokenizer.json")
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        _add_metadata(writer, config, name, _pooling_type(files), float16)
        _add_vocab(writer, tokenizer, config, files)
        with files.open("model.safetensors") as stream:
            header, position = _read_safetensors_header(stream)
            plans = _plan_tensors(header, int(config["num_hidden_layers"]), float16)
            for plan in plans:
                writer.add_tensor_info(plan.gguf_name, plan.shape, plan.out_dtype, plan.out_nbytes)
            writer.open_output_file(path)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            data_start = position
            for plan in plans:
                if data_start + plan.begin < position:
                    raise ValueError(f"overlapping tensor data at {plan.gguf_name}")
                _skip(stream, data_start + plan.begin - position)
                raw = _read_array(stream, plan.end - plan.begin)
                position = data_start + plan.end
                writer.write_tensor_data(_decode(raw, plan))
    finally:
        writer.close()


def convert_sentence_transformer(
    source: Path, out_path: Path, *, name: str | None = None, float16: bool = True
) -> None:
    """Write ``source`` (a sentence-transformers BERT model: directory or zip) as a GGUF at ``out_path``.

    2-D weight matrices are stored as F16 unless ``float16`` is false; norms, biases and the
    small position/token-type tables stay F32. ``name`` defaults to the output file's stem.
    """
    source = Path(source)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        with _model_files(source) as files:
            _write(files, tmp_path, name or out_path.stem, float16)
        with tmp_path.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp_path.chmod(0o644)
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
