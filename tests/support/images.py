"""Images made with Pillow for the image pipeline's tests: photo-like pixels, encodings, a decompression bomb."""

from __future__ import annotations

import base64
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
