"""The image pipeline of vision requests: inputs in, plain base64 (what Ollama's API expects) out.

Each input is raw base64, a ``data:<mime>;base64,<data>`` URL, or, only when ``allow_remote_images`` is on, an
http(s) URL fetched with a timeout and a byte limit. The decoded bytes are checked and normalised by
``image_codec.transcode`` (see its docstring for the rules) in a small thread pool owned by the processor, so
the event loop never decodes pixels. Identical images (same SHA-256 of the decoded bytes) are processed once:
finished results are kept in a small LRU, and concurrent identical inputs share the computation in flight.
Every refusal is an ``InvalidImage`` (400, ``invalid_image``) that says which image and why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import aiohttp

from shared_ollama.errors import InvalidImage
from shared_ollama.service.images.codec import CodecLimits, ImageReport, transcode
from shared_ollama.settings import Settings

__all__ = ["ImageProcessor", "ImageReport", "ImageTotals"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,15}):")
_FETCH_CHUNK = 64 * 1024
REMOTE_DISABLED = (
    "remote image URLs are disabled on this service (a gateway fetching arbitrary URLs is an SSRF risk): "
    "send the image inline as base64 or as a data URL (data:image/jpeg;base64,...), "
    "or ask the operator to enable fetching with SHARED_OLLAMA_ALLOW_REMOTE_IMAGES=true"
)


@dataclass(frozen=True, slots=True)
class ImageTotals:
    """Counters since the processor started (for metrics)."""

    images: int = 0
    """Images prepared successfully (cache hits included)."""
    processed: int = 0
    """Images actually decoded and checked by a worker (cache misses)."""
    cache_hits: int = 0
    refused: int = 0
    """``prepare`` calls refused with ``InvalidImage`` (or failed)."""
    bytes_in: int = 0
    """Decoded bytes received, summed over prepared images."""
    bytes_out: int = 0
    """Bytes sent on to the engine (before base64), summed over prepared images."""

    @property
    def bytes_saved(self) -> int:
        return self.bytes_in - self.bytes_out

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "bytes_saved": self.bytes_saved}


@dataclass(frozen=True, slots=True)
class _Result:
    b64: str
    report: ImageReport


def _work(data: bytes, limits: CodecLimits) -> _Result:
    """Runs in a worker thread. A refusal leaves it as a fresh ``InvalidImage`` with only its message: the
    codec's traceback (its frames hold the image and the decoder's buffers) stays in the worker and dies here."""
    try:
        out, report = transcode(data, limits)
        return _Result(base64.b64encode(out).decode("ascii"), report)
    except InvalidImage as exc:
        message = exc.message
    raise InvalidImage(message)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_base64(text: str) -> bytes:
    """Standard or URL-safe base64; whitespace and missing padding are tolerated. Raises ``InvalidImage``."""
    compact = "".join(text.split())
    if not compact:
        raise InvalidImage("the image is empty (no base64 data)")
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImage(f"invalid base64 image data ({exc})") from None


def decode_data_url(url: str) -> bytes:
    """``data:<mime>;base64,<data>``; the label is ignored (the format is detected from the bytes)."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise InvalidImage("malformed data URL: no ',' (expected data:<mime>;base64,<data>)")
    params = [p.strip().lower() for p in header.split(";")[1:]]
    if "base64" not in params:
        raise InvalidImage("the data URL is not base64-encoded (expected data:<mime>;base64,<data>)")
    return decode_base64(payload)


class ImageProcessor:
    """Turns the images of one request into what the engine gets. One per service; ``close()`` at shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._limits = CodecLimits(
            max_side=settings.image_max_side,
            max_pixels=settings.image_max_pixels,
            jpeg_quality=settings.image_jpeg_quality,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.image_workers, thread_name_prefix="shared-ollama-images"
        )
        self._cache: OrderedDict[bytes, _Result] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future[_Result]] = {}
        self._totals = ImageTotals()

    @property
    def totals(self) -> ImageTotals:
        return self._totals

    @property
    def fetch_limit(self) -> int:
        """Largest remote image fetched, in bytes."""
        return self._settings.max_body_bytes * 4

    def close(self, *, wait: bool = True) -> None:
        """Stop the worker threads (work already queued is abandoned)."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._cache.clear()

    async def prepare(
        self, images: Sequence[str], *, max_side: int | None = None, jpeg_quality: int | None = None
    ) -> tuple[list[str], list[ImageReport]]:
        """Plain base64 strings for the engine, in the same order, and one report per image.

        ``max_side`` and ``jpeg_quality`` override the service's settings for this request."""
        limits = self._limits
        if max_side is not None or jpeg_quality is not None:
            limits = replace(
                limits,
                max_side=max_side if max_side is not None else limits.max_side,
                jpeg_quality=jpeg_quality if jpeg_quality is not None else limits.jpeg_quality,
            )
        if isinstance(images, str | bytes):
            raise InvalidImage("images must be a list of strings (base64 or data URLs), not a single string")
        count, limit = len(images), self._settings.image_max_count
        if count > limit:
            self._count(refused=1)
            raise InvalidImage(f"too many images: {count}, the limit is {limit}")
        if not count:
            return [], []
        try:
            blobs = await self._decode_all(images)
            outcomes = await asyncio.gather(*(self._one(data, limits) for data in blobs), return_exceptions=True)
        except InvalidImage:
            self._count(refused=1)
            raise
        results: list[_Result] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                self._count(refused=1)
                if isinstance(outcome, InvalidImage):
                    raise self._refusal(index, count, outcome.message) from None
                raise outcome
            results.append(outcome)
        reports = [r.report for r in results]
        self._count(
            images=count,
            cache_hits=sum(r.cached for r in reports),
            bytes_in=sum(r.original_bytes for r in reports),
            bytes_out=sum(r.sent_bytes for r in reports),
        )
        return [r.b64 for r in results], reports

    # --- inputs

    async def _decode_all(self, images: Sequence[str]) -> list[bytes]:
        count = len(images)
        blobs: list[bytes | None] = [None] * count
        remote: list[tuple[int, str]] = []
        for index, value in enumerate(images):
            if not isinstance(value, str):
                raise self._refusal(index, count, f"expected a string, got {type(value).__name__}")
            text = value.strip()
            lowered = text[:8].lower()
            try:
                if lowered.startswith("data:"):
                    blobs[index] = decode_data_url(text)
                elif lowered.startswith(("http://", "https://")):
                    if not self._settings.allow_remote_images:
                        raise InvalidImage(f"{REMOTE_DISABLED} (got {_short(text)})")
                    remote.append((index, text))
                elif match := _SCHEME.match(text):
                    raise InvalidImage(f"unsupported image URL scheme {match.group(1)!r}: send base64 or a data URL")
                else:
                    blobs[index] = decode_base64(text)
            except InvalidImage as exc:
                raise self._refusal(index, count, exc.message) from None
        if remote:
            timeout = aiohttp.ClientTimeout(total=self._settings.remote_image_timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                fetched = await asyncio.gather(
                    *(self._fetch(session, url) for _, url in remote), return_exceptions=True
                )
            for (index, _), outcome in zip(remote, fetched, strict=True):
                if isinstance(outcome, InvalidImage):
                    raise self._refusal(index, count, outcome.message)
                if isinstance(outcome, BaseException):
                    raise outcome
                blobs[index] = outcome
        return [b for b in blobs if b is not None]

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> bytes:
        limit, shown = self.fetch_limit, _short(url)
        try:
            async with session.get(url, headers={"Accept": "image/*"}, max_redirects=5) as resp:
                if resp.status != 200:
                    raise InvalidImage(f"fetching {shown} returned HTTP {resp.status}")
                ctype = resp.content_type
                if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                    raise InvalidImage(f"{shown} is not an image (Content-Type {ctype})")
                if resp.content_length is not None and resp.content_length > limit:
                    raise InvalidImage(f"{shown} is {resp.content_length} bytes, the limit is {limit}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(_FETCH_CHUNK):
                    body += chunk
                    if len(body) > limit:
                        raise InvalidImage(f"{shown} is larger than the limit of {limit} bytes")
                return bytes(body)
        except TimeoutError:
            raise InvalidImage(f"fetching {shown} timed out after {self._settings.remote_image_timeout:g} s") from None
        except (aiohttp.ClientError, ValueError) as exc:
            raise InvalidImage(f"could not fetch {shown}: {type(exc).__name__}: {exc}") from None

    # --- processing, cache, sharing

    async def _one(self, data: bytes, limits: CodecLimits) -> _Result:
        digest = hashlib.sha256(data)
        if limits != self._limits:  # the same image under other limits is another result
            digest.update(repr(limits).encode())
        key = digest.digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return _Result(hit.b64, replace(hit.report, cached=True))
        future = self._inflight.get(key)
        if future is not None:
            result = await asyncio.shield(future)
            return _Result(result.b64, replace(result.report, cached=True))
        future = asyncio.get_running_loop().run_in_executor(self._executor, _work, data, limits)
        self._inflight[key] = future
        future.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(future)

    def _finished(self, key: bytes, future: asyncio.Future[_Result]) -> None:
        self._inflight.pop(key, None)
        if future.cancelled() or future.exception() is not None:
            return
        self._count(processed=1)
        entries = self._settings.image_cache_entries
        if entries <= 0:
            return
        self._cache[key] = future.result()
        self._cache.move_to_end(key)
        while len(self._cache) > entries:
            self._cache.popitem(last=False)

    def _count(self, **deltas: int) -> None:
        current = self._totals
        self._totals = replace(current, **{k: getattr(current, k) + v for k, v in deltas.items()})

    @staticmethod
    def _refusal(index: int, count: int, message: str) -> InvalidImage:
        where = f"image {index + 1} of {count}" if count > 1 else "image"
        return InvalidImage(f"{where}: {message}")
