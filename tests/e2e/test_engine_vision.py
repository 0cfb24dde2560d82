"""The embedded engine with a vision model: SmolLM2 plus a tiny random-weight projector (engine/tiny_vision.py).

The projector sees nothing, but llama.cpp turns an image into its embeddings and adds them to the prompt, so
an image reaching the model shows as a larger ``prompt_eval_count`` than the same chat without it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from shared_ollama.engine.tiny_vision import IMAGE_TOKENS, TINY_VISION_NAME
from tests.e2e.conftest import engine_process

pytestmark = pytest.mark.e2e

TEXT = "smollm2:135m"
VISION = TINY_VISION_NAME
OPTIONS = {"num_predict": 2, "temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def http(vision_store: Path, artifacts_dir: Path) -> Iterator[httpx.Client]:
    with (
        engine_process(vision_store, artifacts_dir / "engine-vision-e2e.log") as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield client


def _png() -> str:
    image = Image.new("RGB", (64, 64), (220, 40, 40))
    for x in range(16, 48):
        image.putpixel((x, x), (10, 200, 10))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _chat(http: httpx.Client, model: str, images: list[str] | None) -> httpx.Response:
    message: dict[str, object] = {"role": "user", "content": "What is in the picture?"}
    if images:
        message["images"] = images
    return http.post("/api/chat", json={"model": model, "messages": [message], "stream": False, "options": OPTIONS})


def test_show_lists_vision_only_for_the_model_with_a_projector(http: httpx.Client) -> None:
    vision = http.post("/api/show", json={"model": VISION})
    assert vision.status_code == 200
    assert vision.json()["capabilities"] == ["completion", "vision"]
    text = http.post("/api/show", json={"model": TEXT}).json()
    assert "vision" not in text["capabilities"]
    tags = {m["name"] for m in http.get("/api/tags").json()["models"]}
    assert {TEXT, VISION} <= tags


def test_an_image_reaches_the_model(http: httpx.Client) -> None:
    without = _chat(http, VISION, None)
    assert without.status_code == 200, without.text
    with_image = _chat(http, VISION, [_png()])
    assert with_image.status_code == 200, with_image.text
    body = with_image.json()
    assert body["done"] is True
    assert body["eval_count"] <= 2
    # The image's embeddings (one per 8x8 patch of the 32x32 resized image) were added to the prompt.
    baseline = without.json()["prompt_eval_count"]
    assert body["prompt_eval_count"] == baseline + IMAGE_TOKENS
    two = _chat(http, VISION, [_png(), _png()])
    assert two.status_code == 200, two.text
    assert two.json()["prompt_eval_count"] == baseline + 2 * IMAGE_TOKENS


def test_an_image_also_reaches_the_model_through_generate(http: httpx.Client) -> None:
    def generate(images: list[str] | None) -> dict[str, object]:
        body = {"model": VISION, "prompt": "Describe it.", "stream": False, "options": OPTIONS}
        resp = http.post("/api/generate", json={**body, "images": images} if images else body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    assert int(generate([_png()])["prompt_eval_count"]) - int(generate(None)["prompt_eval_count"]) >= IMAGE_TOKENS


def test_a_model_without_projector_refuses_images(http: httpx.Client) -> None:
    resp = _chat(http, TEXT, [_png()])
    assert resp.status_code == 400
    assert "does not support images" in resp.json()["error"]


def test_an_undecodable_image_is_a_client_error(http: httpx.Client) -> None:
    resp = _chat(http, VISION, ["bm90IGFuIGltYWdl"])  # base64 of "not an image"
    assert 400 <= resp.status_code < 500, resp.text
