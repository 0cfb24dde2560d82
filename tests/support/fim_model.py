"""A copy of a GGUF model whose metadata names fill-in-the-middle tokens, for tests of ``suffix``.

No small model with real FIM tokens is available offline, and SmolLM2 has none. Its vocabulary has spare
special tokens, though: naming three of them as the prefix, suffix and middle tokens (the GGUF keys llama.cpp
reads) gives a model whose engine builds and runs fill-in-the-middle prompts. Its answers mean nothing, but the
prompt the engine evaluated shows that the suffix reached the model in FIM form.
"""

from __future__ import annotations

from pathlib import Path

from gguf import GGUFReader, GGUFValueType, GGUFWriter

FIM_KEYS = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.fim_mid_token_id")
SMOLLM2_SPARE_TOKENS = (7, 8, 9)
"""``<gh_stars>``, ``<issue_start>``, ``<issue_comment>``: special tokens no SmolLM2 prompt uses (and not ones
llama.cpp treats as end of generation)."""


def write_fim_copy(source: Path, target: Path, tokens: tuple[int, int, int] = SMOLLM2_SPARE_TOKENS) -> Path:
    """``source`` with the FIM token keys set to ``tokens`` (prefix, suffix, middle), written to ``target``."""
    reader = GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(str(target), arch)
    for item in reader.fields.values():
        if item.name.startswith("GGUF.") or item.name == "general.architecture" or item.name in FIM_KEYS:
            continue
        kind = item.types[0]
        writer.add_key_value(
            item.name, item.contents(), kind, sub_type=item.types[-1] if kind == GGUFValueType.ARRAY else None
        )
    for key, token in zip(FIM_KEYS, tokens, strict=True):
        writer.add_uint32(key, token)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return target
