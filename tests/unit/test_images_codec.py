"""The image codec's refusals of truncated PNGs: before decoding when the file ends inside a chunk, and never with
Pillow's exception attached (its traceback holds the decoder and the decoded pixels)."""

from __future__ import annotations

import pytest

from shared_ollama.errors import InvalidImage
from shared_ollama.service.images.codec import CodecLimits, transcode
from tests.support.images import close_last_chunk, encode, large_rgb, truncated_png

LIMITS = CodecLimits(max_side=1536, max_pixels=40_000_000, jpeg_quality=85)


def cut_png(side: int = 800) -> bytes:
    img = large_rgb(side, side, seed=3)
    return truncated_png(img, cut=len(encode(img, "PNG")) // 2)


def refusal(data: bytes) -> InvalidImage:
    with pytest.raises(InvalidImage) as info:
        transcode(data, LIMITS)
    assert info.value.code == "invalid_image" and info.value.status == 400
    return info.value


def test_png_cut_inside_a_chunk_is_refused_before_decoding() -> None:
    data = cut_png()
    error = refusal(data)
    assert error.message.startswith("truncated or corrupt PNG image: the data ends inside its 'IDAT' chunk")
    assert f"({len(data)} bytes" in error.message


def test_png_cut_inside_a_chunk_header_is_refused() -> None:
    whole = encode(large_rgb(64, 64), "PNG")
    error = refusal(whole[:-6])  # half of IEND's 12 bytes: the pixels are all there, the file is still cut
    assert "truncated or corrupt PNG image" in error.message


def test_truncated_pixels_refusal_carries_no_decoder_state() -> None:
    data = close_last_chunk(cut_png())  # ends at a chunk boundary: only decoding finds the truncation
    error = refusal(data)
    assert error.message == "truncated or corrupt PNG image: image file is truncated"
    assert error.__context__ is None and error.__cause__ is None


def test_whole_png_is_still_accepted() -> None:
    data = encode(large_rgb(800, 600), "PNG")
    out, report = transcode(data, LIMITS)
    assert report.action == "kept" and out == data
