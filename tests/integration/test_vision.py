"""Vision requests on every surface against the scripted engine: images normalised on the way, per-request
compression, refusals before the engine, models that cannot see, and the tenant's vision cap.

Images are generated with Pillow; what the engine received is read back from the scripted engine's record of
request bodies (see ``tests/support/vision.py``). Requests are held at the engine with gates
(``options.fake_gate``) wherever a test needs them in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, stats
from tests.support.images import b64, bomb_png, encode, photo
from tests.support.vision import (
    OPENAI_PATHS,
    SURFACES,
    data_url,
    header,
    marker,
    native_chat,
    native_error,
    native_vlm,
    openai_chat,
    openai_error,
    opened,
    random_bytes,
    received,
    sent_images,
    small_jpeg,
)

Start = Callable[..., ServedGateway]
MiB = 1 << 20


# --- images


@dataclass(frozen=True)
class Samples:
    big: bytes
    """A 12-megapixel photo-like JPEG (4000x3000)."""
    alpha: bytes
    """A 320x200 PNG whose alpha channel is really used."""
    rotated: bytes
    """A 300x200 JPEG with EXIF orientation 6 (displayed 200x300)."""
    gif: bytes
    """A 1x1 GIF."""
    mislabelled: bytes
    """64x48 PNG bytes, sent as a data URL labelled image/jpeg."""


def alpha_png(width: int = 320, height: int = 200) -> bytes:
    rgba = photo(width, height, seed=1).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return encode(rgba, "PNG")


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "ACME Camera"
    return encode(photo(300, 200, seed=2), "JPEG", quality=90, exif=exif.tobytes())


def truncated_jpeg() -> bytes:
    data = encode(photo(800, 600, seed=5), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.fixture(scope="module")
def samples() -> Samples:
    return Samples(
        big=encode(photo(4000, 3000), "JPEG", quality=90),
        alpha=alpha_png(),
        rotated=rotated_jpeg(),
        gif=encode(Image.new("RGB", (1, 1), (200, 30, 40)), "GIF"),
        mislabelled=encode(photo(64, 48, seed=3), "PNG"),
    )


# --- clients


@pytest.fixture
def http_client_options() -> dict[str, Any]:
    """Longer than the default timeout: some requests here carry a 12-megapixel photo."""
    return {"timeout": 60, "limits": httpx.Limits(max_connections=100)}


# --- 1. the image pipeline on every surface


def inputs_for(path: str, s: Samples) -> list[str]:
    """The five sample images in the form each surface takes: base64 and data URLs mixed on the native
    surfaces, data URLs in ``image_url`` parts on the OpenAI ones; the PNG always labelled image/jpeg."""
    mislabelled = data_url(s.mislabelled, "image/jpeg")
    if path in OPENAI_PATHS:
        return [
            data_url(s.big, "image/jpeg"),
            data_url(s.alpha, "image/png"),
            data_url(s.rotated, "image/jpeg"),
            data_url(s.gif, "image/gif"),
            mislabelled,
        ]
    if path == "/api/v1/vlm":
        return [b64(s.big), data_url(s.alpha, "image/png"), b64(s.rotated), data_url(s.gif, "image/gif"), mislabelled]
    return [data_url(s.big, "image/jpeg"), b64(s.alpha), data_url(s.rotated, "image/jpeg"), b64(s.gif), mislabelled]


def check_sent(images: list[bytes], s: Samples, where: str) -> None:
    assert len(images) == 5, where
    big, alpha, rotated, gif, mislabelled = (opened(data) for data in images)
    assert big.format == "JPEG" and big.size == (1536, 1152), (where, big.format, big.size)
    assert abs(big.width / big.height - 4000 / 3000) < 0.01, where
    assert alpha.format == "PNG" and alpha.mode == "RGBA" and alpha.size == (320, 200), where
    low, high = alpha.getchannel("A").getextrema()
    assert low < 255 and high == 255, (where, "the alpha channel is kept")
    assert rotated.format == "JPEG" and rotated.size == (200, 300), (where, "width and height swapped")
    assert not rotated.getexif() and "exif" not in rotated.info, (where, "no EXIF left")
    assert gif.size == (1, 1), where
    assert mislabelled.format == "PNG" and mislabelled.size == (64, 48), where
    assert images[4] == s.mislabelled, (where, "a small upright PNG goes through untouched")


async def test_images_on_every_surface_reach_the_engine_normalised(
    serve_gateway: Start, engine: Engine, http: Any, samples: Samples
) -> None:
    # The drop-in surfaces keep the general body limit (1.5 MiB by default): raise it for the 12 MP photo.
    gw = serve_gateway(max_body_bytes=16 * MiB)
    client = http(gw)
    for path, build in SURFACES.items():
        text = marker()
        resp = await client.post(path, json=build(text, inputs_for(path, samples)), headers=project("seer"))
        assert resp.status_code == 200, (path, resp.text)
        engine_path = "/api/generate" if path == "/api/generate" else "/api/chat"
        check_sent(sent_images(engine, text, engine_path), samples, path)
        info = header(resp)
        assert info["count"] == "5", (path, info)
        assert int(info["original_bytes"]) > int(info["sent_bytes"]) > 0, (path, info)
        assert int(info["original_bytes"]) > len(samples.big), (path, info)
        sizes = info["sizes"].split(",")
        assert sizes == ["4000x3000->1536x1152", "320x200->320x200", "300x200->200x300", "1x1->1x1", "64x48->64x48"]
        answer = resp.json()
        if path in OPENAI_PATHS:
            assert answer["choices"][0]["message"]["content"] == "tok " * 8, path
        elif path == "/api/generate":
            assert answer["response"] == "tok " * 8
        else:
            assert answer["message"]["content"] == "tok " * 8, path
        if path == "/api/v1/vlm":
            reports = answer["image_compression"]
            assert len(reports) == 5
            first = reports[0]
            assert first["original_bytes"] == len(samples.big) > first["sent_bytes"] > 0
            assert (first["original_size"], first["sent_size"]) == ([4000, 3000], [1536, 1152])
            assert (first["original_format"], first["sent_format"], first["action"]) == ("JPEG", "JPEG", "resized")
            assert [r["action"] for r in reports[1:]] == ["kept", "reencoded", "reencoded", "kept"]
            assert reports[2]["sent_size"] == [200, 300]
            assert reports[4]["original_bytes"] == reports[4]["sent_bytes"] == len(samples.mislabelled)
            assert sum(r["original_bytes"] for r in reports) == int(info["original_bytes"])
            assert sum(r["sent_bytes"] for r in reports) == int(info["sent_bytes"])
        else:
            assert "image_compression" not in answer, path
    # Streamed: the header is there too (the images are processed before the first byte).
    text = marker()
    body = native_vlm(text, inputs_for("/api/v1/vlm", samples), stream=True)
    async with client.stream("POST", "/api/v1/vlm", json=body) as resp:
        assert resp.status_code == 200
        assert header(resp)["count"] == "5"
        lines = [line async for line in resp.aiter_lines() if line]
    assert '"done":true' in lines[-1].replace(" ", "")
    check_sent(sent_images(engine, text, "/api/chat"), samples, "/api/v1/vlm streamed")
    await assert_drained(client)


async def test_a_12mp_photo_fits_the_vision_endpoints_but_not_the_drop_in_body_limit(
    serve_gateway: Start, engine: Engine, http: Any, samples: Samples
) -> None:
    gw = serve_gateway()
    client = http(gw)
    text = marker()
    ok = await client.post("/api/v1/vlm", json=native_vlm(text, [b64(samples.big)]))
    assert ok.status_code == 200, ok.text
    assert opened(sent_images(engine, text, "/api/chat")[0]).size == (1536, 1152)
    too_big = await client.post("/api/chat", json=native_chat(marker(), [b64(samples.big)]))
    native_error(too_big, "request_too_large", 413)
    await assert_drained(client)


async def test_per_request_image_compression(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    medium = encode(photo(1600, 1200, seed=6), "JPEG", quality=85)
    # max_side on the native vision endpoint
    text = marker()
    resp = await client.post("/api/v1/vlm", json=native_vlm(text, [b64(medium)], image_compression={"max_side": 512}))
    assert resp.status_code == 200, resp.text
    [report] = resp.json()["image_compression"]
    assert report["sent_size"] == [512, 384] and report["action"] == "resized"
    img = opened(sent_images(engine, text, "/api/chat")[0])
    assert img.format == "JPEG" and img.size == (512, 384)
    assert header(resp)["sizes"] == "1600x1200->512x384"
    # ... and on the OpenAI-format vision endpoint
    text = marker()
    body = openai_chat(text, [data_url(medium, "image/jpeg")], image_compression={"max_side": 512})
    resp = await client.post("/api/v1/vlm/openai", json=body)
    assert resp.status_code == 200, resp.text
    assert opened(sent_images(engine, text, "/api/chat")[0]).size == (512, 384)
    # Without an override the same image is scaled to the service's 1536.
    text = marker()
    resp = await client.post("/api/v1/vlm", json=native_vlm(text, [b64(medium)]))
    assert opened(sent_images(engine, text, "/api/chat")[0]).size == (1536, 1152)
    # enabled: false sends a small JPEG byte for byte.
    small = small_jpeg()
    text = marker()
    resp = await client.post("/api/v1/vlm", json=native_vlm(text, [b64(small)], image_compression={"enabled": False}))
    assert resp.status_code == 200, resp.text
    assert sent_images(engine, text, "/api/chat") == [small]
    [report] = resp.json()["image_compression"]
    assert report["original_bytes"] == report["sent_bytes"] == len(small) and report["action"] == "kept"
    # An invalid override is a 400 for the request, before anything reaches the engine.
    text = marker()
    bad = await client.post("/api/v1/vlm", json=native_vlm(text, [b64(small)], image_compression={"max_side": 10}))
    assert "max_side" in native_error(bad, "invalid_request")
    assert received(engine, text) == []
    await assert_drained(client)


# --- 2. refusals


def bad_inputs(openai: bool) -> list[tuple[str, list[str], str]]:
    """(what, images, a fragment of the reason) for every refusal; images as each surface takes them."""
    tiny = encode(photo(8, 8), "PNG")

    def image(data: bytes, mime: str) -> str:
        return data_url(data, mime) if openai else b64(data)

    return [
        ("decompression bomb", [image(bomb_png(30000, 30000), "image/png")], "decompression bomb"),
        ("random bytes", [image(random_bytes(), "image/jpeg")], "not a recognised image"),
        ("truncated JPEG", [image(truncated_jpeg(), "image/jpeg")], "truncated or corrupt"),
        ("too many images", [image(tiny, "image/png")] * 3, "too many images: 3, the limit is 2"),
        (
            "invalid base64",
            ["data:image/png;base64,not base64 at all!!" if openai else "not base64 at all!!"],
            "invalid base64",
        ),
        ("remote URL", ["http://example.com/cat.jpg"], "remote image URLs are disabled"),
    ]


@pytest.mark.parametrize("path", ["/api/v1/vlm", "/api/chat", "/api/v1/vlm/openai", "/v1/chat/completions"])
async def test_bad_images_are_refused_before_the_engine(
    serve_gateway: Start, engine: Engine, http: Any, path: str
) -> None:
    gw = serve_gateway(image_max_count=2)
    client = http(gw)
    openai = path in OPENAI_PATHS
    build = SURFACES[path]
    for what, images, reason in bad_inputs(openai):
        text = marker()
        resp = await client.post(path, json=build(text, images))
        message = openai_error(resp, "invalid_image") if openai else native_error(resp, "invalid_image")
        assert reason in message, (what, message)
        if what != "too many images":
            assert message.startswith("image: "), (what, "the message says which image", message)
        assert received(engine, text) == [], (what, "nothing reached the engine")
    # The same gateway takes good images (the marker lookup above is not vacuous).
    text = marker()
    tiny = encode(photo(8, 8), "PNG")
    resp = await client.post(path, json=build(text, [data_url(tiny, "image/png") if openai else b64(tiny)]))
    assert resp.status_code == 200, resp.text
    assert sent_images(engine, text, "/api/chat") == [tiny]
    rejections = (await stats(client))["rejections"]
    assert rejections.get("invalid_image") == 6, rejections
    await assert_drained(client)


# --- 3. models that cannot see


async def test_images_for_a_model_without_vision_are_refused(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway()
    client = http(gw)
    image = b64(small_jpeg())
    for path, build in SURFACES.items():
        text = marker()
        images = [f"data:image/jpeg;base64,{image}"] if path in OPENAI_PATHS else [image]
        resp = await client.post(path, json=build(text, images, model="fake"))
        if path in OPENAI_PATHS:
            message = openai_error(resp, "invalid_request")
            assert resp.json()["error"]["param"] == "model"
        else:
            message = native_error(resp, "invalid_request")
        assert "'fake'" in message and "cannot see images" in message, (path, message)
        assert [e["path"] for e in received(engine, text)] == [], (path, "never reaches the engine")
    await assert_drained(client)


# --- 4. the tenant's vision cap


async def test_vision_requests_count_against_the_vision_cap(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(max_inflight_vision=1)
    client = http(gw)
    gate = gate_name()
    image = b64(small_jpeg())
    held = asyncio.create_task(
        client.post(
            "/api/v1/vlm",
            json=native_vlm(marker(), [image], stream=False, options={"fake_gate": gate}),
            headers=project("seer"),
        )
    )
    await engine.waiting_at_least(gate, 1)
    text = marker()
    busy = await client.post("/api/v1/vlm", json=native_vlm(text, [image]), headers=project("seer"))
    message = native_error(busy, "tenant_busy", 429)
    assert "'seer'" in message and "1 vision requests" in message
    assert received(engine, text) == []
    openai = await client.post(
        "/v1/chat/completions", json=openai_chat(marker(), [f"data:image/jpeg;base64,{image}"]), headers=project("seer")
    )
    assert openai.status_code == 429 and openai.json()["error"]["code"] == "tenant_busy"
    text_request = await client.post("/api/chat", json=chat(), headers=project("seer"))
    assert text_request.status_code == 200, "text requests have their own cap"
    other = await client.post("/api/v1/vlm", json=native_vlm(marker(), [image]), headers=project("other"))
    assert other.status_code == 200, "another tenant is not affected"
    row = (await stats(client))["tenants"]["seer"]
    assert row["vision"]["in_flight"] == 1 and row["vision"]["interactive"]["running"] == 1
    assert row["text"]["in_flight"] == 0
    await engine.open(gate)
    assert (await held).status_code == 200
    await assert_drained(client)
