"""Vision and batches end to end: the real gateway, the real engine, SmolLM2 and the tiny vision model.

The tiny model's projector has random weights, so it sees nothing; but each image it receives adds its
embeddings to the prompt (``IMAGE_TOKENS`` per image), which proves the compressed image reached llama.cpp.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from shared_ollama.engine.tiny_vision import IMAGE_TOKENS, TINY_VISION_NAME
from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

TEXT = "smollm2:135m"
OPTIONS = {"num_predict": 2, "temperature": 0, "seed": 1}
QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def gateway(vision_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = start_gateway(vision_store, tmp_path_factory.mktemp("gw-vision"), artifacts_dir / "gateway-vision.log")
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=120) as client:
        yield client


def photo(width: int = 4000, height: int = 3000) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise, 12 megapixels by default."""
    rng = np.random.default_rng(7)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    rgb += rng.normal(0, 12, rgb.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_12_megapixel_photo_is_compressed_and_reaches_the_vision_model(http: httpx.Client) -> None:
    plain = http.post(
        "/api/v1/vlm",
        json={"model": TINY_VISION_NAME, "messages": [{"role": "user", "content": QUESTION}], "options": OPTIONS},
    )
    assert plain.status_code == 200, plain.text
    big = photo()
    resp = http.post(
        "/api/v1/vlm",
        json={
            "model": TINY_VISION_NAME,
            "messages": [{"role": "user", "content": QUESTION}],
            "images": [f"data:image/jpeg;base64,{b64(big)}"],
            "options": OPTIONS,
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["prompt_eval_count"] == plain.json()["prompt_eval_count"] + IMAGE_TOKENS
    [report] = body["image_compression"]
    assert report["original_size"] == [4000, 3000]
    assert report["sent_size"] == [1536, 1152]
    assert report["original_bytes"] == len(big)
    assert report["sent_bytes"] < len(big) / 4
    assert "count=1" in resp.headers["X-Shared-Ollama-Images"]


def test_openai_image_parts_reach_the_model_through_the_sdk(gateway: str, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
    small = photo(320, 240)
    content = [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(small)}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(small)}"}},
    ]
    with_images = client.chat.completions.create(
        model=TINY_VISION_NAME, messages=[{"role": "user", "content": content}], max_tokens=2, temperature=0, seed=1
    )
    without = client.chat.completions.create(
        model=TINY_VISION_NAME, messages=[{"role": "user", "content": QUESTION}], max_tokens=2, temperature=0, seed=1
    )
    assert with_images.usage is not None and without.usage is not None
    assert with_images.usage.prompt_tokens == without.usage.prompt_tokens + 2 * IMAGE_TOKENS
    service = http.post(
        "/api/v1/vlm/openai",
        json={"model": TINY_VISION_NAME, "messages": [{"role": "user", "content": content}], "max_tokens": 2},
    )
    assert service.status_code == 200
    assert service.json()["object"] == "chat.completion"


def test_a_model_that_cannot_see_gets_a_clear_400(gateway: str, http: httpx.Client) -> None:
    image = f"data:image/jpeg;base64,{b64(photo(64, 48))}"
    resp = http.post(
        "/api/v1/vlm", json={"model": TEXT, "messages": [{"role": "user", "content": "?"}], "images": [image]}
    )
    assert resp.status_code == 400
    assert resp.json()["code"] == "invalid_request"
    assert f"model '{TEXT}' cannot see images" in resp.json()["error"]
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0)
    parts = [{"type": "image_url", "image_url": {"url": image}}]
    with pytest.raises(openai.BadRequestError, match="cannot see images"):
        client.chat.completions.create(model=TEXT, messages=[{"role": "user", "content": parts}], max_tokens=2)


def test_broken_images_are_invalid_image(http: httpx.Client) -> None:
    truncated = photo(640, 480)[:5000]
    for image in (b64(truncated), b64(b"definitely not an image" * 10)):
        resp = http.post(
            "/api/v1/vlm",
            json={"model": TINY_VISION_NAME, "messages": [{"role": "user", "content": "?"}], "images": [image]},
        )
        assert resp.status_code == 400
        assert resp.json()["code"] == "invalid_image"


def test_a_batch_of_ten_with_one_unknown_model_gives_nine_answers_and_one_404(http: httpx.Client) -> None:
    items = [
        {"model": TEXT, "messages": [{"role": "user", "content": f"Say the number {i}."}], "options": OPTIONS}
        for i in range(10)
    ]
    items[6]["model"] = "no-such-model:1b"
    resp = http.post("/api/v1/batch/chat", json={"requests": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["total"], body["succeeded"], body["failed"]) == (10, 9, 1)
    assert [r["index"] for r in body["results"]] == list(range(10))
    failed = body["results"][6]
    assert (failed["ok"], failed["status"], failed["code"]) == (False, 404, "model_not_found")
    for result in body["results"][:6] + body["results"][7:]:
        assert result["ok"] is True
        assert result["response"]["done"] is True
        assert result["response"]["eval_count"] >= 1
    stats = http.get("/api/v1/queue/stats").json()
    assert stats["queue_depth"] == 0 and stats["engine_slots"]["in_use"] == 0


def test_a_vision_batch_mixes_answers_and_image_errors(http: httpx.Client) -> None:
    good = {
        "model": TINY_VISION_NAME,
        "messages": [{"role": "user", "content": QUESTION}],
        "images": [b64(photo(800, 600))],
        "options": OPTIONS,
    }
    bad = {**good, "images": [b64(b"\x00" * 64)]}
    blind = {**good, "model": TEXT}
    body = http.post("/api/v1/batch/vlm", json={"requests": [good, bad, blind]}).json()
    assert [r["ok"] for r in body["results"]] == [True, False, False]
    assert body["results"][0]["response"]["image_compression"][0]["original_size"] == [800, 600]
    assert body["results"][1]["code"] == "invalid_image"
    assert "cannot see images" in body["results"][2]["error"]
