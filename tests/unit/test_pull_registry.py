"""Ollama registry manifests mapped into the store: layers by media type, the config check, text layers."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from shared_ollama.engine.pull.registry import (
    ADAPTER,
    LICENSE,
    MESSAGES,
    MODEL,
    PARAMS,
    PROJECTOR,
    SYSTEM,
    TEMPLATES,
    check_config,
    fields_from_texts,
    plan,
)
from shared_ollama.errors import BackendError, InvalidRequest

PREFIX = "application/vnd.ollama.image."


def layer(media_type: str, seed: str = "", size: int = 10) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(f"{media_type}{seed}".encode()).hexdigest()
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest(*layers: dict[str, Any]) -> bytes:
    config = layer("application/vnd.docker.container.image.v1+json")
    return orjson.dumps({"schemaVersion": 2, "config": config, "layers": list(layers)})


def test_layers_map_by_media_type() -> None:
    raw = manifest(
        layer(MODEL, size=1000), layer(PROJECTOR), layer(ADAPTER), layer(SYSTEM), layer(PARAMS), layer(MESSAGES),
        layer(LICENSE, "a"), layer(LICENSE, "b"), layer(TEMPLATES[0]), layer(PREFIX + "embed"),
    )  # fmt: skip
    result = plan(raw, "m:latest")
    assert (result.model.media_type, result.model.size) == (MODEL, 1000)
    assert result.projector is not None and result.projector.media_type == PROJECTOR
    assert [a.media_type for a in result.adapters] == [ADAPTER]
    assert [t.media_type for t in result.texts] == [SYSTEM, PARAMS, MESSAGES, LICENSE, LICENSE, TEMPLATES[0]]
    assert [s.media_type for s in result.skipped] == [PREFIX + "embed"]
    assert result.config is not None
    assert [w.media_type for w in result.weights] == [MODEL, PROJECTOR, ADAPTER]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ((layer(PROJECTOR),), "0 model layers"),
        ((layer(MODEL, "a"), layer(MODEL, "b")), "2 model layers"),
        ((layer(MODEL), layer(PREFIX + "tensor")), "safetensors weights"),
        ((layer(MODEL), layer(PROJECTOR, "a"), layer(PROJECTOR, "b")), "several projectors"),
    ],
)
def test_manifests_the_engine_cannot_use_are_refused(layers: tuple[dict[str, Any], ...], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan(manifest(*layers), "m:latest")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        orjson.dumps({"layers": [{"mediaType": MODEL, "digest": "md5:1", "size": 1}]}),
        orjson.dumps({"layers": [{"mediaType": MODEL, "digest": "sha256:" + "0" * 64, "size": -1}]}),
    ],
)
def test_malformed_manifests_are_a_backend_error(raw: bytes) -> None:
    with pytest.raises(BackendError):
        plan(raw, "m:latest")


def test_a_huge_text_layer_is_refused() -> None:
    with pytest.raises(BackendError, match="too large"):
        plan(manifest(layer(MODEL), layer(SYSTEM, size=5 << 20)), "m:latest")


def test_the_config_refuses_other_formats_and_families_llama_cpp_cannot_load() -> None:
    check_config(orjson.dumps({"model_format": "gguf", "model_family": "qwen3"}), "m")
    check_config(b"not json", "m")  # tells nothing: the GGUF header will
    with pytest.raises(InvalidRequest, match="safetensors model"):
        check_config(orjson.dumps({"model_format": "safetensors", "model_family": "qwen3"}), "m")
    with pytest.raises(InvalidRequest, match=r"cannot run 'm': architecture 'mllama' is not one llama\.cpp can load"):
        check_config(orjson.dumps({"model_format": "gguf", "model_family": "mllama"}), "m")


def test_text_layers_become_the_models_fields() -> None:
    texts = [
        (SYSTEM, b"You are terse."),
        (PARAMS, orjson.dumps({"temperature": 0.2, "stop": ["<|im_end|>"], "num_ctx": "2048"})),
        (MESSAGES, orjson.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])),
        (LICENSE, b"Apache-2.0"),
        (LICENSE, b"Extra terms"),
        (TEMPLATES[0], b"{{ .Prompt }}"),
    ]
    fields, had_template = fields_from_texts(texts, "m")
    assert fields == {
        "system": "You are terse.",
        "parameters": {"temperature": 0.2, "stop": ["<|im_end|>"], "num_ctx": 2048},
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "license": ["Apache-2.0", "Extra terms"],
    }
    assert had_template
    assert fields_from_texts([(SYSTEM, b"x")], "m") == ({"system": "x"}, False)


@pytest.mark.parametrize(
    ("media_type", "blob", "message"),
    [
        (PARAMS, b"[1]", "not a JSON object"),
        (PARAMS, b'{"no_such_option": 1}', "unknown parameter 'no_such_option'"),
        (PARAMS, b"{", "not JSON"),
        (MESSAGES, b'[{"role": "robot", "content": "x"}]', "not a list of"),
        (SYSTEM, b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_text_layers_are_a_backend_error(media_type: str, blob: bytes, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        fields_from_texts([(media_type, blob)], "m")
