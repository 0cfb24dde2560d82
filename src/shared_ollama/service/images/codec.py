"""Decode, check, orient, downscale and re-encode one image. Synchronous and CPU-bound: run it in a thread.

The rules (``transcode``):

* The format is detected from the bytes (never from a data-URL label). Accepted: JPEG (and MPO, multi-picture
  JPEG from cameras), PNG, WEBP, GIF (first frame), BMP, TIFF (first page). Anything else is refused, naming it.
* The dimensions are read from the header (``Image.open`` is lazy) and an image declaring more than
  ``max_pixels`` pixels is refused before a single pixel is decoded (decompression bombs).
* A PNG whose bytes end inside one of its chunks is refused as truncated before a single pixel is decoded (a
  cut 6000x6000 PNG would otherwise cost a 144 MB buffer first).
* The pixels are then decoded in full; a truncated or corrupt file is refused. Pillow's module-level settings
  (``LOAD_TRUNCATED_IMAGES``, ``MAX_IMAGE_PIXELS``) are never touched. A refusal carries its message only:
  never the decoder's exception, whose traceback would keep the decoded pixels alive as long as the refusal.
* **Kept** (the original bytes are forwarded untouched): a JPEG or PNG whose longest side is at most
  ``max_side``, whose EXIF orientation is absent or 1, and whose colour mode is a common one (not CMYK).
* Otherwise: EXIF orientation applied, all metadata dropped (EXIF, XMP, ICC profile, comments), downscaled so
  the longest side is at most ``max_side`` (LANCZOS, aspect ratio kept; large JPEGs are first decoded at a
  reduced scale with ``draft``), and re-encoded as JPEG, or as PNG when the image really uses transparency.
  ``action`` is ``resized`` when the dimensions changed, else ``reencoded``.
"""

from __future__ import annotations

import io
import struct
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from shared_ollama.errors import InvalidImage

if TYPE_CHECKING:  # Pillow is imported by the first image, not at start-up (bench/coldstart.py)
    from PIL import Image

Action = Literal["kept", "resized", "reencoded"]

OPEN_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Pillow plugins ``Image.open`` may use; no other parser ever sees the bytes (except to name a refusal)."""
ACCEPTED_FORMATS = frozenset({*OPEN_FORMATS, "MPO"})
"""MPO is how the JPEG plugin names multi-picture camera JPEGs."""
KEEPABLE_FORMATS = frozenset({"JPEG", "PNG"})
KEEPABLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})
ORIENTATION_TAG = 0x0112
_ACCEPTED_NAMES = "JPEG, PNG, WEBP, GIF, BMP, TIFF"
_CORRUPT_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)
"""What Pillow's decoders raise on bad data (``UnidentifiedImageError`` is an ``OSError``)."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"\xff\x0a", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cJXL ", "a JPEG XL image"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
    (b"{", "JSON or text"),
    (b"[", "JSON or text"),
)


@dataclass(frozen=True, slots=True)
class ImageReport:
    """What happened to one image on its way to the engine."""

    original_bytes: int
    sent_bytes: int
    original_size: tuple[int, int]
    """(width, height) as stored in the file (before the EXIF orientation is applied)."""
    sent_size: tuple[int, int]
    original_format: str
    sent_format: str
    action: Action
    cached: bool = False
    """True when the result came from the cache or from an identical image already being processed."""

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["original_size"] = list(self.original_size)
        data["sent_size"] = list(self.sent_size)
        return data


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """The settings ``transcode`` needs (plain values, so the worker threads share nothing mutable)."""

    max_side: int
    max_pixels: int
    jpeg_quality: int


def transcode(data: bytes, limits: CodecLimits) -> tuple[bytes, ImageReport]:
    """Check and normalise one image; returns the bytes to send and the report. Raises ``InvalidImage``."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    img = _open(data)
    try:
        fmt = img.format or "unknown"
        if fmt not in ACCEPTED_FORMATS:  # defensive: Image.open was restricted to these
            raise InvalidImage(f"unsupported image format {fmt}; accepted: {_ACCEPTED_NAMES}")
        width, height = img.size
        if width < 1 or height < 1:
            raise InvalidImage(f"the {fmt} image declares an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise InvalidImage(
                f"the {fmt} image declares {width}x{height} = {width * height} pixels, more than the limit of "
                f"{limits.max_pixels} (refused before decoding: possible decompression bomb)"
            )
        if fmt == "PNG":
            _check_png_chunks(data)
        keep_candidate = (
            fmt in KEEPABLE_FORMATS and max(width, height) <= limits.max_side and img.mode in KEEPABLE_MODES
        )
        if not keep_candidate and fmt in ("JPEG", "MPO") and max(width, height) > limits.max_side:
            # Decode at 1/2, 1/4 or 1/8 scale straight away, never below the final size: far less work.
            img.draft("RGB", _target_size(width, height, limits.max_side))
        _load(img, fmt)
        orientation = _orientation(img)
        if keep_candidate and orientation == 1:
            report = ImageReport(len(data), len(data), (width, height), (width, height), fmt, fmt, "kept")
            return data, report
        out, sent_format, sent_size = _reencode(img, orientation, limits)
    finally:
        img.close()
    action: Action = "reencoded" if sent_size in ((width, height), (height, width)) else "resized"
    return out, ImageReport(len(data), len(out), (width, height), sent_size, fmt, sent_format, action)


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only), restricted to the accepted formats."""
    from PIL import Image, UnidentifiedImageError

    message = ""
    try:
        return Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except Image.DecompressionBombError as exc:
        message = f"refused before decoding: possible decompression bomb ({exc})"
    except UnidentifiedImageError:
        message = f"unsupported image: found {identify(data)}; accepted: {_ACCEPTED_NAMES}"
    except _CORRUPT_ERRORS as exc:
        message = f"truncated or corrupt image header: {exc}"
    raise InvalidImage(message)  # outside the handler: no __context__ holding Pillow's frames


def _check_png_chunks(data: bytes) -> None:
    """Walk the chunk headers (no decompression); refuse a PNG whose bytes end inside a chunk."""
    offset, size = len(_PNG_SIGNATURE), len(data)
    while offset < size:
        if offset + 8 > size:
            raise InvalidImage(f"truncated or corrupt PNG image: the data ends inside a chunk header at byte {size}")
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > size:
            name = kind.decode("latin-1")
            raise InvalidImage(
                f"truncated or corrupt PNG image: the data ends inside its {name!r} chunk "
                f"({size} bytes, the chunk needs {end}): the file is incomplete"
            )
        if kind == b"IEND":
            return
        offset = end


def identify(data: bytes) -> str:
    """A short description of bytes that are not an accepted image, for error messages."""
    head = data[:64]
    stripped = head.lstrip()
    lowered = stripped.lower()
    if lowered.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return "an SVG image (vector images are not supported)"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "a HEIC/HEIF image"
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        return "an MP4/QuickTime video"
    for signature, name in _SIGNATURES:
        if stripped.startswith(signature):
            return name
    from PIL import Image

    try:  # any other format Pillow knows: read the header only, decode nothing
        with Image.open(io.BytesIO(data)) as other:
            return f"a {other.format} image"
    except Exception:
        pass
    return f"data that is not a recognised image (first bytes: {head[:8].hex(' ') or 'none'})"


def _load(img: Image.Image, fmt: str) -> None:
    """Decode the pixels. Pillow's exception is dropped here, inside the handler: its traceback holds the
    decoder and so the whole decoded buffer (144 MB for a 6000x6000 image) for as long as it lives."""
    from PIL import Image

    try:
        img.load()
        return
    except Image.DecompressionBombError as exc:
        message = f"refused: possible decompression bomb ({exc})"
    except _CORRUPT_ERRORS as exc:
        message = f"truncated or corrupt {fmt} image: {exc}"
    raise InvalidImage(message)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # unreadable EXIF: nothing to apply, and it is dropped on re-encode anyway
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Dimensions after downscaling so the longest side is ``max_side`` (unchanged when already within it)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    if width >= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def _reencode(img: Image.Image, orientation: int, limits: CodecLimits) -> tuple[bytes, str, tuple[int, int]]:
    from PIL import Image, ImageOps

    work = img
    if orientation != 1:
        work = ImageOps.exif_transpose(work)
    work, has_alpha = _normalise_mode(work)
    target = _target_size(work.width, work.height, limits.max_side)
    if target != work.size:
        # reducing_gap: Image.reduce() by an integer factor first, then LANCZOS: same quality, much faster.
        work = work.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    work.info = {}  # drop EXIF, XMP, ICC profile, comments, DPI...
    buf = io.BytesIO()
    if has_alpha:
        work.save(buf, format="PNG", compress_level=6)
        sent_format = "PNG"
    else:
        work.save(buf, format="JPEG", quality=limits.jpeg_quality, optimize=True)
        sent_format = "JPEG"
    return buf.getvalue(), sent_format, work.size


def _normalise_mode(img: Image.Image) -> tuple[Image.Image, bool]:
    """Convert to L, RGB or RGBA; RGBA only when some pixel is actually not fully opaque."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        img = img.convert("I").point(lambda v: v * (1 / 257)).convert("L")  # 16-bit -> 8-bit, not clipped
        mode = "L"
    elif mode == "F":
        img = img.convert("L")
        mode = "L"
    transparent = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if transparent:
        rgba = img.convert("RGBA")
        low, _ = rgba.getchannel("A").getextrema()
        if isinstance(low, int | float) and low < 255:
            return rgba, True
        return (rgba.convert("L") if mode in ("LA", "La") else rgba.convert("RGB")), False
    if mode in ("L", "RGB"):
        return img, False
    if mode == "1":
        return img.convert("L"), False
    return img.convert("RGB"), False  # P, CMYK, YCbCr, LAB, HSV...


def expected_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Public for tests and callers: the dimensions a ``width``x``height`` image is scaled to."""
    return _target_size(width, height, max_side)
