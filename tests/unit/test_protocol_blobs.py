"""Blob digests and the ``files`` / ``adapters`` maps of a create body, as Ollama names them."""

from __future__ import annotations

from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.blobs import file_digests, parse_digest, valid_file_name

HEX = "ab" * 32


@pytest.mark.parametrize("text", [f"sha256:{HEX}", f"sha256-{HEX}", f"sha256:{HEX.upper()}", f" sha256:{HEX} "])
def test_a_digest_is_kept_as_sha256_colon_lowercase_hex(text: str) -> None:
    assert parse_digest(text) == f"sha256:{HEX}"


@pytest.mark.parametrize("text", ["", "sha256:", f"sha256:{HEX[:-1]}", f"sha512:{HEX}", f"{HEX}", f"sha256:{HEX}0"])
def test_anything_else_is_a_400_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest, match="expected sha256:<64 hex digits>") as caught:
        parse_digest(text, param="files")
    assert caught.value.param == "files"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("model.gguf", True),
        ("sub/dir/model.gguf", True),
        ("/etc/passwd", False),
        ("../model.gguf", False),
        ("a/../../b", False),
        ("./model.gguf", False),
        ("a//b", False),
        ("", False),
        ("a\\b", False),
    ],
)
def test_file_names_stay_inside_the_model(name: str, valid: bool) -> None:
    assert valid_file_name(name) is valid


def test_file_digests_checks_every_name_and_digest() -> None:
    assert file_digests(None, "files") == {}
    assert file_digests({"m.gguf": f"sha256-{HEX}"}, "files") == {"m.gguf": f"sha256:{HEX}"}


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (["m.gguf"], "must be an object"),
        ({"m.gguf": 3}, "must be an object"),
        ({"../m.gguf": f"sha256:{HEX}"}, "must be relative"),
        ({"m.gguf": "sha256:00"}, "invalid digest"),
    ],
)
def test_bad_maps_are_refused_by_name(raw: Any, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        file_digests(raw, "adapters")
    assert caught.value.param == "adapters"
    assert "'adapters'" in caught.value.message
