"""Image pipeline benchmark: one 12-megapixel photo-like JPEG through ``ImageProcessor.prepare``.

    .venv/bin/python -m bench.images
    .venv/bin/python -m bench.images --runs 9

Printed: the median time per image for a first (uncached) run and for a cached run, bytes in and out and
their ratio, and, measured in the same run for comparison, a plain Pillow decode + JPEG save of the same
image at full size. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import time

import numpy as np
from PIL import Image

from shared_ollama.service.images.pipeline import ImageProcessor
from shared_ollama.settings import Settings


def photo_jpeg(width: int = 4000, height: int = 3000, quality: int = 90) -> bytes:
    """Photo-like pixels (gradients, a pattern, noise) encoded as JPEG."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 90.0) * np.cos(y / 70.0)], axis=-1)
    noisy = base + rng.integers(-24, 25, size=(height, width, 3), dtype=np.int8)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def plain_pillow(data: bytes, quality: int) -> int:
    """The naive baseline: decode at full size and save again as JPEG."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality, optimize=True)
    return len(out.getvalue())


async def _run(runs: int) -> None:
    settings = Settings()
    data = photo_jpeg()
    text = base64.b64encode(data).decode("ascii")
    print(
        f"input: 4000x3000 JPEG, {len(data):,} bytes; max side {settings.image_max_side}, "
        f"quality {settings.image_jpeg_quality}, {settings.image_workers} workers, {runs} runs each"
    )

    first: list[float] = []
    sent = 0
    for _ in range(runs):
        processor = ImageProcessor(settings)  # fresh: empty cache
        try:
            start = time.perf_counter()
            _, [report] = await processor.prepare([text])
            first.append(time.perf_counter() - start)
            sent = report.sent_bytes
        finally:
            processor.close()

    cached: list[float] = []
    processor = ImageProcessor(settings)
    try:
        await processor.prepare([text])
        for _ in range(runs):
            start = time.perf_counter()
            _, [report] = await processor.prepare([text])
            cached.append(time.perf_counter() - start)
        totals = processor.totals
    finally:
        processor.close()

    plain: list[float] = []
    plain_bytes = 0
    for _ in range(runs):
        start = time.perf_counter()
        plain_bytes = plain_pillow(data, settings.image_jpeg_quality)
        plain.append(time.perf_counter() - start)

    m_first, m_cached, m_plain = (statistics.median(v) for v in (first, cached, plain))
    print(
        f"pipeline, first run   median {m_first * 1000:8.1f} ms/image  (min {min(first) * 1000:.1f}, "
        f"max {max(first) * 1000:.1f})"
    )
    print(f"pipeline, cached run  median {m_cached * 1000:8.3f} ms/image")
    print(
        f"plain Pillow decode + save at full size  median {m_plain * 1000:8.1f} ms/image  "
        f"-> pipeline/plain time ratio {m_first / m_plain:.2f}"
    )
    print(
        f"bytes in {len(data):,}  out {sent:,}  ratio out/in {sent / len(data):.3f}  "
        f"(plain Pillow re-save: {plain_bytes:,}, {plain_bytes / len(data):.3f})"
    )
    print(f"processor totals (cached processor): {totals.as_dict()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_run(max(1, args.runs)))


if __name__ == "__main__":
    main()
