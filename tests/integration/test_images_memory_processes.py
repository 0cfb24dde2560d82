"""Gateway memory under truncated large images: every one is a clear 400, and the gateway's RSS stays bounded.

A gateway process in front of the scripted engine (its vision model: any name with ``vision``); RSS is read
from the gateway's own process with psutil, so it is the gateway's memory, not the test's. A memory bound, not
a timing: each distinct truncated 6000x6000 PNG used to keep its decoded buffers (~35-85 MB) alive for good.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.images import b64, close_last_chunk, large_rgb, truncated_png
from tests.support.observability import Gateways
from tests.support.vision import native_error, native_vlm

pytestmark = pytest.mark.integration  # the scripted engine, not the real one

SIDE = 6000
MEASURED = 20
WARM_UP = 4
GROWTH_LIMIT = 200 * 2**20
"""Without the fix 20 images grow RSS by 0.7-1.7 GB; with it a decoded buffer is reused, never kept."""


def truncated_pngs(count: int, first_seed: int) -> list[bytes]:
    """Distinct truncated 6000x6000 PNGs, alternately cut inside a chunk (the first 60 KB of the file) and cut at
    a chunk boundary (so the pixels are decoded before the truncation shows)."""
    images = []
    for seed in range(first_seed, first_seed + count):
        cut = truncated_png(large_rgb(SIDE, SIDE, seed))
        images.append(cut if seed % 2 else close_last_chunk(cut))
    return images


def refuse(client: httpx.Client, data: bytes) -> None:
    resp = client.post("/api/v1/vlm", json=native_vlm("what is this?", [b64(data)], model="fake-vision"))
    message = native_error(resp, "invalid_image")
    assert "truncated or corrupt PNG image" in message, message


def test_truncated_large_pngs_are_refused_without_growing_gateway_memory(gateways: Gateways, tmp_path: Path) -> None:
    url, proc = gateways.start(tmp_path, "vision-memory")
    gateway = psutil.Process(proc.pid)
    warm_up = truncated_pngs(WARM_UP, first_seed=1000)
    measured = truncated_pngs(MEASURED, first_seed=0)
    with httpx.Client(base_url=url, timeout=60) as client:
        for data in warm_up:  # the image workers' first decodes size their heaps: not growth
            refuse(client, data)
        baseline = gateway.memory_info().rss
        for data in measured:
            refuse(client, data)
        growth = gateway.memory_info().rss - baseline
    assert growth < GROWTH_LIMIT, f"gateway RSS grew by {growth / 2**20:.0f} MiB over {MEASURED} refused images"
