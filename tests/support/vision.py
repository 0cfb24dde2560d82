"""Vision and batch requests to a served gateway, and what reached the scripted engine.

Images are generated with Pillow; what the engine received is read back from the scripted engine's record of
request bodies (found by a unique marker in the prompt) and opened with Pillow again.
"""

from __future__ import annotations

import base64
import io
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from PIL import Image

from tests.support.images import b64, encode, photo

if TYPE_CHECKING:
    from tests.integration.conftest import Engine

JsonDict = dict[str, Any]


VISION = "fake-vision"
IMAGES_HEADER = "X-Shared-Ollama-Images"


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{b64(data)}"


def small_jpeg(seed: int = 4) -> bytes:
    return encode(photo(640, 480, seed=seed), "JPEG", quality=80)


def random_bytes(seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(4096)


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


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
