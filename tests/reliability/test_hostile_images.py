"""Hostile images on every image-carrying surface, against a served gateway and the scripted engine: bombs,
corrupt and truncated files, other file types, and values that are not images at all. Each is a clear 4xx in the
surface's format, refused before the engine (a batch reports it in the item's place), and the gateway keeps
serving. test_vision.py (integration) covers the refusal messages on four surfaces; this sweep adds
``/api/generate`` and ``/api/v1/batch/vlm``, the other file types and the non-string values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Engine, ServedGateway
from tests.reliability.conftest import refused, still_serving
from tests.support.images import b64, bomb_png, encode, large_rgb, photo, truncated_png
from tests.support.vision import OPENAI_PATHS, SURFACES, data_url, marker, native_vlm, random_bytes, received

pytestmark = pytest.mark.reliability
Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"><rect/></svg>'
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"


def truncated() -> bytes:
    """An 800x800 PNG cut in half (the data ends inside its IDAT chunk)."""
    img = large_rgb(800, 800, seed=3)
    return truncated_png(img, cut=len(encode(img, "PNG")) // 2)


def corrupt_jpeg() -> bytes:
    """A JPEG whose entropy-coded data is overwritten with noise after the headers."""
    data = bytearray(encode(photo(320, 240, seed=6), "JPEG", quality=90))
    data[600:-2] = random_bytes(seed=9)[: len(data) - 602].ljust(len(data) - 602, b"\x00")
    return bytes(data)


@pytest.fixture(scope="module")
def bad_files() -> dict[str, tuple[bytes, str]]:
    """(bytes, the MIME type a client claims for them) for every file that must be refused."""
    return {
        "decompression bomb 30000x30000": (bomb_png(30_000, 30_000), "image/png"),
        "bomb with 2**31-1 sides": (bomb_png(2**31 - 1, 2**31 - 1), "image/png"),
        "random bytes": (random_bytes(), "image/jpeg"),
        "truncated PNG": (truncated(), "image/png"),
        "corrupt JPEG": (corrupt_jpeg(), "image/jpeg"),
        "SVG": (SVG, "image/svg+xml"),
        "PDF labelled PNG": (PDF, "image/png"),
        "plain text": (b"hello, this is not an image", "text/plain"),
        "empty": (b"", "image/png"),
    }


NOT_STRINGS: list[Any] = [42, {"url": "x"}, None, ["nested"]]


def body_for(path: str, text: str, image: Any) -> JsonDict:
    """A request for ``path`` carrying one image value as that surface takes it (base64 or a data URL)."""
    if path in OPENAI_PATHS:
        body = SURFACES[path](text, ["placeholder"])
        body["messages"][0]["content"][1]["image_url"]["url"] = image
        return body
    return SURFACES[path](text, [image])


@pytest.mark.parametrize("path", list(SURFACES))
async def test_hostile_images_are_refused_on_every_surface(
    serve_gateway: Start, engine: Engine, http: Any, path: str, bad_files: dict[str, tuple[bytes, str]]
) -> None:
    client = http(serve_gateway())
    text = marker()
    for what, (data, mime) in bad_files.items():
        image = data_url(data, mime) if path in OPENAI_PATHS else b64(data)
        resp = await client.post(path, json=body_for(path, text, image))
        refused(resp, path, 400, "invalid_image" if data else None)
        if path not in OPENAI_PATHS:  # the native surfaces also take data URLs
            resp = await client.post(path, json=body_for(path, text, data_url(data, mime)))
            refused(resp, path, 400)
        assert received(engine, text) == [], (what, "nothing reached the engine")
    for value in NOT_STRINGS:
        resp = await client.post(path, json=body_for(path, text, value))
        refused(resp, path, 400, "invalid_request")
    assert received(engine, text) == []
    await still_serving(client)


async def test_a_batch_of_hostile_images_reports_each_item_and_serves_the_good_one(
    serve_gateway: Start, engine: Engine, http: Any, bad_files: dict[str, tuple[bytes, str]]
) -> None:
    client = http(serve_gateway(batch_max_items=32))
    text = marker()
    items = [native_vlm(f"{text}-bad", [b64(data)]) for data, _ in bad_files.values()]
    items += [native_vlm(f"{text}-bad", [value]) for value in NOT_STRINGS]
    items.append(native_vlm(f"{text}-good", [b64(encode(photo(16, 16), "PNG"))]))
    resp = await client.post("/api/v1/batch/vlm", json={"requests": items}, timeout=httpx.Timeout(120))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["total"], out["succeeded"], out["failed"]) == (len(items), 1, len(items) - 1), out
    *bad, good = out["results"]
    assert good["ok"], good
    for result in bad:
        assert not result["ok"] and result["status"] == 400, result
        assert result["code"] in ("invalid_image", "invalid_request"), result
        assert isinstance(result["error"], str) and result["error"], result
    assert received(engine, f"{text}-bad") == []
    assert len(received(engine, f"{text}-good")) == 1
    await still_serving(client)
