"""A tiny random-weight vision projector (mmproj GGUF) for engine-level vision tests.

No small real vision model is available offline, so this writes the smallest CLIP-style vision tower that
llama.cpp's mtmd/clip loader accepts: a LLaVA-style ``mlp`` projector (``mm.0`` -> GELU -> ``mm.2``) over a
one-block ViT on 32x32 images cut into 8x8 patches (16 image tokens). Its weights are random (seeded, so
the file is deterministic); it sees nothing, but it turns an image into embeddings of the text model's
width that llama.cpp adds to the prompt, which is what a test of the image path needs.

``install_tiny_vision`` pairs it with a text model already in the store (``smollm2:135m`` by default) as a
new store entry; the text model's GGUF blob is shared by digest, not copied.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gguf
import numpy as np

from shared_ollama.engine.store import ModelEntry, ModelStore

TINY_VISION_NAME = "tiny-vision:test"
IMAGE_SIZE = 32
PATCH_SIZE = 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
"""Embeddings one image adds to the prompt (no class token, no merging)."""
_WIDTH = 64
_HEADS = 4
_FFN = 128
_BLOCKS = 1
_PROJ_HIDDEN = 64
_EPS = 1e-6


def _tensors(n_embd_text: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Name -> array in numpy (row-major) shape; GGUF stores the reversed shape, as llama.cpp expects."""

    def weight(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    n_pos = IMAGE_TOKENS
    tensors: dict[str, np.ndarray] = {
        "v.patch_embd.weight": weight(_WIDTH, 3, PATCH_SIZE, PATCH_SIZE),
        "v.patch_embd.bias": zeros(_WIDTH),
        "v.position_embd.weight": (0.02 * rng.standard_normal((n_pos, _WIDTH))).astype(np.float32),
        "v.pre_ln.weight": ones(_WIDTH),
        "v.pre_ln.bias": zeros(_WIDTH),
    }
    for block in range(_BLOCKS):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{prefix}.{name}.weight"] = weight(_WIDTH, _WIDTH)
            tensors[f"{prefix}.{name}.bias"] = zeros(_WIDTH)
        for name in ("ln1", "ln2"):
            tensors[f"{prefix}.{name}.weight"] = ones(_WIDTH)
            tensors[f"{prefix}.{name}.bias"] = zeros(_WIDTH)
        tensors[f"{prefix}.ffn_up.weight"] = weight(_FFN, _WIDTH)
        tensors[f"{prefix}.ffn_up.bias"] = zeros(_FFN)
        tensors[f"{prefix}.ffn_down.weight"] = weight(_WIDTH, _FFN)
        tensors[f"{prefix}.ffn_down.bias"] = zeros(_WIDTH)
    tensors["mm.0.weight"] = weight(_PROJ_HIDDEN, _WIDTH)
    tensors["mm.0.bias"] = zeros(_PROJ_HIDDEN)
    tensors["mm.2.weight"] = weight(n_embd_text, _PROJ_HIDDEN)
    tensors["mm.2.bias"] = zeros(n_embd_text)
    return tensors


def write_projector(path: Path, n_embd_text: int = 576, seed: int = 0) -> Path:
    """Write the tiny projector GGUF to ``path`` (its embeddings are ``n_embd_text`` wide); returns ``path``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name("tiny-vision")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type("mlp")
    writer.add_vision_projection_dim(n_embd_text)
    writer.add_vision_image_size(IMAGE_SIZE)
    writer.add_vision_patch_size(PATCH_SIZE)
    writer.add_vision_embedding_length(_WIDTH)
    writer.add_vision_feed_forward_length(_FFN)
    writer.add_vision_block_count(_BLOCKS)
    writer.add_vision_head_count(_HEADS)
    writer.add_vision_attention_layernorm_eps(_EPS)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_gelu(True)
    for name, array in _tensors(n_embd_text, rng).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def install_tiny_vision(
    store: ModelStore, text_model: str = "smollm2:135m", name: str = TINY_VISION_NAME
) -> ModelEntry:
    """Install ``name`` = ``text_model``'s GGUF + the tiny projector (idempotent; the GGUF blob is shared)."""
    text = store.get(text_model)
    if text is None:
        raise LookupError(f"model {text_model!r} is not in the store at {store.root}")
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        projector = write_projector(Path(tmp) / "mmproj.gguf", text.embedding_length or 576)
        return store.add_gguf(
            name,
            store.blob_path(text.digest),
            capabilities=[c for c in text.capabilities if c != "vision"],
            projector_path=projector,
            template=text.template,
            system=text.system,
            parameters=dict(text.parameters),
        )
