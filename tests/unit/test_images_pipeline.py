"""The image pipeline: format detection, bombs, corruption, orientation, downscaling, re-encoding, cache."""

from __future__ import annotations

import asyncio
import base64
import io
import random
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from shared_ollama.errors import InvalidImage
from shared_ollama.service.images.codec import ImageReport
from shared_ollama.service.images.pipeline import ImageProcessor
from shared_ollama.settings import Settings
from tests.support.images import b64, bomb_png, encode, photo


def settings(**overrides: object) -> Settings:
    return Settings.model_validate(overrides)


@pytest.fixture
def processor() -> Iterator[ImageProcessor]:
    proc = ImageProcessor(settings())
    yield proc
    proc.close()


def decoded(out: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(out, validate=True)))
    img.load()
    return img


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return encode(photo(4000, 3000), "JPEG", quality=90)


async def refused(proc: ImageProcessor, images: list[str]) -> str:
    with pytest.raises(InvalidImage) as info:
        await proc.prepare(images)
    assert info.value.code == "invalid_image" and info.value.status == 400
    return info.value.message


# --- the big photo


async def test_12mp_photo_is_downscaled_to_max_side(processor: ImageProcessor, big_jpeg: bytes) -> None:
    out, [report] = await processor.prepare([b64(big_jpeg)])
    img = decoded(out[0])
    assert img.format == "JPEG" and img.mode == "RGB"
    assert max(img.size) == 1536
    assert abs(img.width / img.height * 3000 - 4000) <= 4000 / img.height  # aspect ratio within 1 px
    assert img.size == (1536, 1152)
    assert report.action == "resized" and not report.cached
    assert report.original_size == (4000, 3000) and report.sent_size == (1536, 1152)
    assert report.original_format == "JPEG" and report.sent_format == "JPEG"
    assert report.original_bytes == len(big_jpeg)
    assert report.sent_bytes == len(base64.b64decode(out[0])) < report.original_bytes
    assert report.as_dict()["sent_size"] == [1536, 1152]
    totals = processor.totals
    assert (totals.images, totals.processed, totals.bytes_in) == (1, 1, len(big_jpeg))
    assert totals.bytes_saved == len(big_jpeg) - report.sent_bytes > 0


async def test_identical_images_are_processed_once(processor: ImageProcessor, big_jpeg: bytes) -> None:
    data = b64(big_jpeg)
    out, reports = await processor.prepare([data, data])  # concurrent identical inputs share the work
    assert out[0] == out[1]
    assert sorted(r.cached for r in reports) == [False, True]
    again, [report] = await processor.prepare(["data:image/jpeg;base64," + data])
    assert again == [out[0]] and report.cached
    assert processor.totals.processed == 1 and processor.totals.cache_hits == 2 and processor.totals.images == 3


async def test_cache_is_an_lru_of_the_configured_size() -> None:
    proc = ImageProcessor(settings(image_cache_entries=1))
    try:
        a, b = (b64(encode(photo(64, 48, seed), "BMP")) for seed in (1, 2))
        await proc.prepare([a])
        await proc.prepare([b])  # evicts a
        _, [report] = await proc.prepare([a])
        assert not report.cached and proc.totals.processed == 3
    finally:
        proc.close()


# --- kept, re-encoded, formats


async def test_small_jpeg_is_kept_byte_identical(processor: ImageProcessor) -> None:
    data = encode(photo(640, 480), "JPEG", quality=80)
    out, [report] = await processor.prepare([b64(data)])
    assert base64.b64decode(out[0]) == data
    assert report == ImageReport(len(data), len(data), (640, 480), (640, 480), "JPEG", "JPEG", "kept")


async def test_png_with_alpha_stays_png_with_alpha(processor: ImageProcessor) -> None:
    rgba = photo(2000, 1000).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 2000, dtype=np.uint8), (1000, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    out, [report] = await processor.prepare([b64(encode(rgba, "PNG"))])
    img = decoded(out[0])
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (1536, 768)
    assert img.getchannel("A").getextrema()[0] < 255
    assert (report.action, report.sent_format) == ("resized", "PNG")


async def test_unused_alpha_becomes_jpeg(processor: ImageProcessor) -> None:
    opaque = photo(2000, 1000).convert("RGBA")
    out, [report] = await processor.prepare([b64(encode(opaque, "PNG"))])
    assert decoded(out[0]).format == "JPEG" and report.sent_format == "JPEG"


async def test_exif_orientation_is_applied_and_metadata_stripped(processor: ImageProcessor) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x010F] = "ACME Camera"  # Make
    exif[0x8298] = "(c) somebody"  # Copyright
    data = encode(photo(300, 200), "JPEG", exif=exif.tobytes(), icc_profile=b"\x00" * 128, comment=b"secret")
    out, [report] = await processor.prepare([b64(data)])
    img = decoded(out[0])
    assert img.size == (200, 300) and report.sent_size == (200, 300) and report.original_size == (300, 200)
    assert report.action == "reencoded"
    assert not img.getexif() and "exif" not in img.info and "icc_profile" not in img.info
    assert "comment" not in img.info
    assert b"ACME" not in base64.b64decode(out[0])


async def test_tiny_gif_first_frame(processor: ImageProcessor) -> None:
    gif = Image.new("P", (1, 1), 3)
    gif.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    second = Image.new("P", (1, 1), 1)
    second.putpalette(gif.getpalette() or [])
    data = encode(gif, "GIF", save_all=True, append_images=[second])
    out, [report] = await processor.prepare([b64(data)])
    img = decoded(out[0])
    assert img.format == "JPEG" and img.size == (1, 1)
    assert (report.original_format, report.action) == ("GIF", "reencoded")
    r, _g, b = img.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
    assert b > 200 and r < 60  # the first frame (blue), not the second (red)


@pytest.mark.parametrize(("fmt", "params"), [("BMP", {}), ("TIFF", {}), ("WEBP", {"quality": 90})])
async def test_other_formats_are_reencoded_to_jpeg(processor: ImageProcessor, fmt: str, params: dict) -> None:
    out, [report] = await processor.prepare([b64(encode(photo(320, 240), fmt, **params))])
    img = decoded(out[0])
    assert img.format == "JPEG" and img.size == (320, 240)
    assert (report.original_format, report.sent_format, report.action) == (fmt, "JPEG", "reencoded")


async def test_mislabelled_data_url_is_detected_from_the_bytes(processor: ImageProcessor) -> None:
    png = encode(photo(1800, 1200), "PNG")
    out, [report] = await processor.prepare(["data:image/jpeg;base64," + b64(png)])
    assert report.original_format == "PNG" and report.sent_format == "JPEG"
    assert decoded(out[0]).size == (1536, 1024)
    small = encode(photo(100, 80), "PNG")
    out, [report] = await processor.prepare(["data:image/jpeg;base64," + b64(small)])
    assert report.action == "kept" and base64.b64decode(out[0]) == small


async def test_outputs_keep_the_input_order(processor: ImageProcessor) -> None:
    images = [encode(photo(50 + i, 40), "PNG") for i in range(4)]
    out, reports = await processor.prepare([b64(d) for d in images])
    assert [decoded(o).width for o in out] == [50, 51, 52, 53]
    assert [r.original_size[0] for r in reports] == [50, 51, 52, 53]


async def test_url_safe_and_unpadded_base64_are_accepted(processor: ImageProcessor) -> None:
    data = encode(photo(64, 64), "PNG")
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    out, _ = await processor.prepare(["\n" + text + "\n"])
    assert base64.b64decode(out[0]) == data


# --- refusals


async def test_decompression_bomb_refused_before_decoding(processor: ImageProcessor) -> None:
    message = await refused(processor, [b64(bomb_png(30000, 30000))])
    assert "decompression bomb" in message
    message = await refused(processor, [b64(bomb_png(8000, 8000))])  # above our limit, below Pillow's
    assert "8000x8000" in message and "40000000" in message and "decompression bomb" in message


async def test_random_bytes_refused(processor: ImageProcessor) -> None:
    message = await refused(processor, [b64(random.Random(7).randbytes(4096))])
    assert "not a recognised image" in message


async def test_unsupported_formats_are_named(processor: ImageProcessor) -> None:
    assert "PDF" in await refused(processor, [b64(b"%PDF-1.7\n...")])
    ico = encode(photo(32, 32), "ICO")
    assert "ICO" in await refused(processor, [b64(ico)])


async def test_truncated_jpeg_refused(processor: ImageProcessor) -> None:
    data = encode(photo(800, 600), "JPEG", quality=90)
    message = await refused(processor, [b64(data[: len(data) // 2])])
    assert "truncated or corrupt" in message


async def test_too_many_images(processor: ImageProcessor) -> None:
    one = b64(encode(photo(8, 8), "PNG"))
    assert await refused(processor, [one] * 9) == "too many images: 9, the limit is 8"


async def test_bad_base64_names_the_image(processor: ImageProcessor) -> None:
    good = b64(encode(photo(8, 8), "PNG"))
    message = await refused(processor, [good, "not base64 at all!!"])
    assert message.startswith("image 2 of 2: invalid base64")
    assert "not base64-encoded" in await refused(processor, ["data:image/png,rawbytes"])
    assert "scheme 'file'" in await refused(processor, ["file:///etc/passwd"])
    assert processor.totals.refused == 3


async def test_remote_url_refused_by_default(processor: ImageProcessor) -> None:
    message = await refused(processor, ["https://example.com/cat.jpg"])
    assert "disabled" in message and "SHARED_OLLAMA_ALLOW_REMOTE_IMAGES=true" in message
    assert "base64" in message and "data URL" in message


# --- remote images, when enabled


@pytest.fixture
async def image_server() -> AsyncIterator[str]:
    jpeg = encode(photo(2000, 1000), "JPEG")
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "photo.jpg":
            return web.Response(body=jpeg, content_type="image/jpeg")
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "huge.bin":
            return web.Response(body=b"\xff" * 10_000, content_type="application/octet-stream")
        if name == "slow.jpg":
            await release.wait()
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    release.set()
    await runner.cleanup()


async def test_remote_images_when_enabled(image_server: str) -> None:
    proc = ImageProcessor(settings(allow_remote_images=True, max_body_bytes=2048, remote_image_timeout=0.5))
    try:
        proc_big = ImageProcessor(settings(allow_remote_images=True))
        try:
            out, [report] = await proc_big.prepare([image_server + "/photo.jpg"])
            assert decoded(out[0]).size == (1536, 768) and report.action == "resized"
        finally:
            proc_big.close()
        assert "not an image (Content-Type text/html)" in await refused(proc, [image_server + "/page.html"])
        assert "the limit is 8192" in await refused(proc, [image_server + "/huge.bin"])
        assert "HTTP 404" in await refused(proc, [image_server + "/missing.jpg"])
        assert "timed out" in await refused(proc, [image_server + "/slow.jpg"])
    finally:
        proc.close()
