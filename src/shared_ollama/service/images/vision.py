"""Vision requests: the model must be able to see, and every image goes through the image pipeline first.

Images may sit in a generate body's ``images`` or in any chat message's ``images``; they are processed
together (one limit on their number per request), then put back where they came from as plain base64.
Which models can see: the engine's ``/api/show`` capabilities, remembered for a minute per model (an engine
that does not report capabilities is trusted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from shared_ollama.backends.client import EngineApi
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.names import canonical_model
from shared_ollama.service.images.pipeline import ImageProcessor, ImageReport

JsonDict = dict[str, Any]
IMAGES_HEADER = "X-Shared-Ollama-Images"
_CAPABILITIES_TTL = 60.0


@dataclass(frozen=True, slots=True)
class Compression:
    """A request's own image settings (``image_compression`` on the service API)."""

    enabled: bool = True
    max_side: int | None = None
    jpeg_quality: int | None = None


def summary(reports: list[ImageReport]) -> str:
    """The images header: what was done, in a form people and scripts can read."""
    original = sum(r.original_bytes for r in reports)
    sent = sum(r.sent_bytes for r in reports)
    sizes = ",".join(f"{r.original_size[0]}x{r.original_size[1]}->{r.sent_size[0]}x{r.sent_size[1]}" for r in reports)
    return f"count={len(reports)}; original_bytes={original}; sent_bytes={sent}; sizes={sizes}"


class Vision:
    def __init__(self, client: EngineApi, images: ImageProcessor, clock: Any = time.monotonic) -> None:
        self.client = client
        self.images = images
        self._clock = clock
        self._capabilities: dict[str, tuple[float, frozenset[str] | None]] = {}

    async def capabilities(self, model: str) -> frozenset[str] | None:
        model = canonical_model(model)
        cached = self._capabilities.get(model)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        show = orjson.loads(await self.client.request("POST", "/api/show", {"model": model}))
        caps = show.get("capabilities") if isinstance(show, dict) else None
        found = frozenset(str(c) for c in caps) if isinstance(caps, list) else None
        self._capabilities[model] = (self._clock() + _CAPABILITIES_TTL, found)
        return found

    def forget(self, model: str) -> None:
        """A model was created, copied, deleted or pulled: ask the engine again next time."""
        self._capabilities.pop(canonical_model(model), None)

    async def prepare(self, body: JsonDict, compression: Compression | None = None) -> list[ImageReport]:
        """Check the model can see, process every image of ``body`` in place; the reports, in order."""
        holders: list[JsonDict] = []
        if body.get("images"):
            holders.append(body)
        messages = body.get("messages")
        if isinstance(messages, list):
            holders += [m for m in messages if isinstance(m, dict) and m.get("images")]
        if not holders:
            return []
        model = str(body["model"])
        caps = await self.capabilities(model)
        if caps is not None and "vision" not in caps:
            raise InvalidRequest(
                f"model '{model}' cannot see images: it has no vision capability "
                f"(its capabilities: {', '.join(sorted(caps)) or 'none'}); send the images to a vision model",
                param="model",
            )
        flat = [image for holder in holders for image in holder["images"]]
        options = compression or Compression()
        if options.enabled:
            processed, reports = await self.images.prepare(
                flat, max_side=options.max_side, jpeg_quality=options.jpeg_quality
            )
        else:  # checked, oriented and normalised, never downscaled (formats llama.cpp cannot read re-encoded)
            processed, reports = await self.images.prepare(flat, max_side=1 << 20, jpeg_quality=95)
        start = 0
        for holder in holders:
            count = len(holder["images"])
            holder["images"] = processed[start : start + count]
            start += count
        return reports
