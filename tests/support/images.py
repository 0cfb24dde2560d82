"""Images made with Pillow for the image pipeline's tests: photo-like pixels, encodings, a decompression bomb."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like pixels: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 90.0) * np.cos(y / 70.0)], axis=-1)
    noisy = base + rng.integers(-24, 25, size=(height, width, 3), dtype=np.int8)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image, followed by a tiny (bogus) IDAT: nothing real to decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


class _Full(Exception):
    """Raised by ``_Capped`` once it holds enough bytes: stops Pillow's encoder early."""


class _Capped(io.BytesIO):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def write(self, data: bytes) -> int:  # type: ignore[override]
        written = super().write(data)
        if self.tell() >= self.cap:
            raise _Full
        return written


def large_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """A large RGB image made quickly: one random row (from ``seed``) repeated. Its PNG compresses about 1000:1,
    so the first 60 KB of the file hold about half of its rows: decoding them fills half the pixel buffer."""
    row = np.random.default_rng(seed).integers(0, 256, size=(1, width, 3), dtype=np.uint8)
    return Image.fromarray(row, "RGB").resize((width, height), Image.Resampling.NEAREST)


def truncated_png(img: Image.Image, cut: int = 60_000) -> bytes:
    """The first ``cut`` bytes of ``img`` as a PNG (the encoder is stopped there): it ends inside an IDAT chunk."""
    buf = _Capped(cut)
    with contextlib.suppress(_Full):
        img.save(buf, format="PNG")
    return buf.getvalue()[:cut]


def close_last_chunk(data: bytes) -> bytes:
    """A truncated PNG whose last, cut chunk is made whole (length and CRC fixed): the file ends at a chunk
    boundary, so only decoding the pixels finds it truncated."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if offset + 12 + length > len(data):
            return data[:offset] + png_chunk(kind, data[offset + 8 :])
        offset += 12 + length
    return data
