"""Vision requests on every surface, and batches, against the scripted engine.

Images are generated here with Pillow; what the engine received is read back from the scripted engine's
record of request bodies (found by a unique marker in the prompt) and opened with Pillow again. Requests are
held at the engine with gates (``options.fake_gate``) wherever a test needs them in flight.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import Engine, ServedGateway, until
from tests.integration.test_admission import assert_drained, chat, gate_name, project, stats
from tests.unit.test_images import b64, bomb_png, encode, photo

Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]
MiB = 1 << 20
VISION = "fake-vision"
IMAGES_HEADER = "X-Shared-Ollama-Images"


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


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{b64(data)}"


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


def small_jpeg(seed: int = 4) -> bytes:
    return encode(photo(640, 480, seed=seed), "JPEG", quality=80)


def random_bytes(seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(4096)


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


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# --- requests and what reached the engine


@pytest.fixture
async def http() -> AsyncIterator[Callable[[ServedGateway], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(gw: ServedGateway) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=gw.url, timeout=60, limits=httpx.Limits(max_connections=100))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def native_vlm(text: str, images: list[str], *, model: str = VISION, **extra: Any) -> JsonDict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "images": images, **extra}


def native_chat(text: str, images: list[str], *, model: str = VISION) -> JsonDict:
    return {"model": model, "messages": [{"role": "user", "content": text, "images": images}], "stream": False}


def native_generate(text: str, images: list[str], *, model: str = VISION) -> JsonDict:
    return {"model": model, "prompt": text, "images": images, "stream": False}


def openai_chat(text: str, urls: list[str], *, model: str = VISION, **extra: Any) -> JsonDict:
    parts: list[JsonDict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": model, "messages": [{"role": "user", "content": parts}], **extra}


SURFACES: dict[str, Callable[..., JsonDict]] = {
    "/api/v1/vlm": native_vlm,
    "/api/chat": native_chat,
    "/api/generate": native_generate,
    "/api/v1/vlm/openai": openai_chat,
    "/v1/chat/completions": openai_chat,
}
OPENAI_PATHS = ("/api/v1/vlm/openai", "/v1/chat/completions")


def received(engine: Engine, text: str) -> list[JsonDict]:
    """The engine's recorded requests whose prompt carries ``text`` (a test's unique marker)."""
    found = []
    for entry in list(engine.engine.received):
        body = entry["body"]
        texts = [body.get("prompt")]
        messages = body.get("messages")
        if isinstance(messages, list):
            texts += [m.get("content") for m in messages if isinstance(m, dict)]
        if any(isinstance(t, str) and text in t for t in texts):
            found.append(entry)
    return found


def sent_images(engine: Engine, text: str, path: str) -> list[bytes]:
    """The decoded images of the one request carrying ``text`` that reached the engine at ``path``."""
    [entry] = received(engine, text)
    assert entry["path"] == path
    body = entry["body"]
    holders = [body] if body.get("images") else [m for m in body["messages"] if m.get("images")]
    assert len(holders) == 1, holders
    return [base64.b64decode(image, validate=True) for image in holders[0]["images"]]


def header(resp: httpx.Response) -> dict[str, str]:
    """``count=5; original_bytes=...; sent_bytes=...; sizes=...`` as a dict."""
    return dict(part.split("=", 1) for part in resp.headers[IMAGES_HEADER].split("; "))


def native_error(resp: httpx.Response, code: str, status: int = 400) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "code", "request_id"}, body
    assert body["code"] == code, body
    return str(body["error"])


def openai_error(resp: httpx.Response, code: str, status: int = 400) -> str:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert isinstance(error, dict), resp.text
    assert error["code"] == code and error["type"] == "invalid_request_error", error
    return str(error["message"])


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


# --- 5. batches


def item(text: str, model: str = "fake", **options: Any) -> JsonDict:
    return {"model": model, "messages": [{"role": "user", "content": text}], "options": options}


async def test_batch_chat_runs_every_item_at_batch_priority_and_reports_each(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway(engine_slots=1)
    client = http(gw)
    gate = gate_name()
    live = asyncio.create_task(client.post("/api/chat", json=chat(gate), headers=project("live")))
    await engine.waiting_at_least(gate, 1)
    tag = marker()
    items: list[JsonDict] = [
        item(f"{tag}-0", "fake", temperature=0.2, num_predict=3),
        item(f"{tag}-1", "fake-b", seed=42, num_predict=5),
        item(f"{tag}-2", "fake", top_p=0.9, num_predict=2),
        item(f"{tag}-3", "fake-b", stop=["x"], num_predict=4),
        {"model": "fake", "messages": "not a list"},
        item(f"{tag}-5", "fake-b", top_k=10, num_predict=6),
        {"model": "fake", "messages": [{"role": "user", "content": f"{tag}-6"}]},
        item(f"{tag}-7", "fault-404"),
        {
            "model": "fake-b",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"{tag}-8"}],
            "options": {"num_predict": 1},
        },
        {**item(f"{tag}-9", "fake", num_predict=2), "format": "json"},
    ]
    batch = asyncio.create_task(client.post("/api/v1/batch/chat", json={"requests": items}, headers=project("nightly")))

    async def batch_queued() -> bool:
        return (await stats(client))["by_class"]["batch"]["queued"] == 4

    await until(batch_queued, "4 batch items queued behind the interactive request")
    s = await stats(client)
    assert s["by_class"]["interactive"] == {"queued": 0, "running": 1}
    assert s["tenants"]["nightly"]["text"]["batch"] == {"queued": 4, "running": 0}
    assert s["tenants"]["nightly"]["text"]["interactive"] == {"queued": 0, "running": 0}
    assert received(engine, tag) == [], "no batch item reached the engine while the slot was taken"
    await engine.open(gate)
    assert (await live).status_code == 200
    resp = await batch
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["total"], out["succeeded"], out["failed"], out["kind"]) == (10, 8, 2, "text")
    assert out["wall_seconds"] >= 0
    results = out["results"]
    assert [r["index"] for r in results] == list(range(10))
    assert [r["ok"] for r in results] == [True] * 4 + [False] + [True] * 2 + [False] + [True] * 2
    for index, result in enumerate(results):
        if not result["ok"]:
            continue
        body = items[index]
        answer = result["response"]
        tokens = body.get("options", {}).get("num_predict", 8)
        assert answer["model"] == body["model"] and answer["done"] is True, (index, answer)
        assert answer["message"]["content"] == "tok " * tokens, (index, answer)
    invalid, missing = results[4], results[7]
    assert (invalid["code"], invalid["status"]) == ("invalid_request", 400)
    assert "messages" in invalid["error"]
    assert (missing["code"], missing["status"]) == ("model_not_found", 404)
    sent = {e["body"]["messages"][-1]["content"]: e["body"] for e in received(engine, tag)}
    assert set(sent) == {f"{tag}-{i}" for i in (0, 1, 2, 3, 5, 6, 7, 8, 9)}
    assert all(body["stream"] is False for body in sent.values())
    assert sent[f"{tag}-1"]["options"] == {"seed": 42, "num_predict": 5}
    assert sent[f"{tag}-9"]["format"] == "json"
    await assert_drained(client)


async def test_batch_size_limits(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(batch_max_items=3)
    client = http(gw)
    tag = marker()
    for path in ("/api/v1/batch/chat", "/api/v1/batch/vlm"):
        over = await client.post(path, json={"requests": [item(f"{tag}-{i}", VISION) for i in range(4)]})
        message = native_error(over, "invalid_request")
        assert "at most 3" in message and "4" in message, message
        empty = await client.post(path, json={"requests": []})
        assert "requests" in native_error(empty, "invalid_request")
    assert received(engine, tag) == []
    full = await client.post("/api/v1/batch/chat", json={"requests": [item(f"{tag}-{i}") for i in range(3)]})
    assert full.status_code == 200 and full.json()["succeeded"] == 3
    await assert_drained(client)


async def test_batch_vlm_reports_each_item_with_its_own_compression(
    serve_gateway: Start, engine: Engine, http: Any
) -> None:
    gw = serve_gateway()
    client = http(gw)
    tag = marker()
    small = small_jpeg(seed=8)
    wide = encode(photo(900, 600, seed=9), "PNG")
    items = [
        native_vlm(f"{tag}-0", [b64(small)]),
        native_vlm(f"{tag}-1", [data_url(wide, "image/png")], image_compression={"max_side": 256}),
        native_vlm(f"{tag}-2", [b64(random_bytes(11))]),
    ]
    resp = await client.post("/api/v1/batch/vlm", json={"requests": items}, headers=project("album"))
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["total"], out["succeeded"], out["failed"], out["kind"]) == (3, 2, 1, "vision")
    first, second, broken = out["results"]
    assert first["ok"] and second["ok"] and not broken["ok"]
    [kept] = first["response"]["image_compression"]
    assert (kept["action"], kept["sent_size"], kept["sent_bytes"]) == ("kept", [640, 480], len(small))
    [resized] = second["response"]["image_compression"]
    assert (resized["original_size"], resized["sent_size"], resized["action"]) == ([900, 600], [256, 171], "resized")
    assert (broken["code"], broken["status"]) == ("invalid_image", 400)
    assert "not a recognised image" in broken["error"]
    assert sent_images(engine, f"{tag}-0", "/api/chat") == [small]
    assert opened(sent_images(engine, f"{tag}-1", "/api/chat")[0]).size == (256, 171)
    assert received(engine, f"{tag}-2") == []
    await assert_drained(client)


async def test_batch_concurrency_bounds_items_at_the_engine(serve_gateway: Start, engine: Engine, http: Any) -> None:
    gw = serve_gateway(engine_slots=4, batch_concurrency=2)
    client = http(gw)
    for tenant, concurrency, expected in (("pair", None, 2), ("trio", 3, 3)):
        gate = gate_name()
        body: JsonDict = {"requests": [item(f"{marker()}-{i}", fake_gate=gate) for i in range(6)]}
        if concurrency is not None:
            body["concurrency"] = concurrency
        batch = asyncio.create_task(client.post("/api/v1/batch/chat", json=body, headers=project(tenant)))
        await engine.waiting_at_least(gate, expected)
        s = await stats(client)
        assert s["queue_depth"] == 0, "the other items wait in the batch, not in the queue"
        assert s["engine_slots"]["in_use"] == expected
        assert s["tenants"][tenant]["text"]["batch"] == {"queued": 0, "running": expected}
        assert engine.waiting(gate) == expected
        await engine.open(gate)
        resp = await batch
        assert resp.status_code == 200, resp.text
        assert resp.json()["succeeded"] == 6
    await assert_drained(client)
