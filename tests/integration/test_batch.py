"""Batches against the scripted engine: every item at batch priority with its own result, size limits,
vision batches with per-item compression, and the batch's concurrency at the engine.

Requests are held at the engine with gates (``options.fake_gate``) wherever a test needs them in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Engine, ServedGateway, assert_drained, chat, gate_name, project, stats, until
from tests.support.images import b64, encode, photo
from tests.support.vision import (
    VISION,
    data_url,
    marker,
    native_error,
    native_vlm,
    opened,
    random_bytes,
    received,
    sent_images,
    small_jpeg,
)

Start = Callable[..., ServedGateway]
JsonDict = dict[str, Any]


@pytest.fixture
def http_client_options() -> dict[str, Any]:
    """The clients of the vision tests: a longer timeout and a smaller pool than the default."""
    return {"timeout": 60, "limits": httpx.Limits(max_connections=100)}


# --- batches


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
    sent_at = time.perf_counter()  # the batch's wall time lies within what this client sees of it
    batch = asyncio.create_task(client.post("/api/v1/batch/chat", json={"requests": items}, headers=project("nightly")))

    async def batch_queued() -> bool:
        return (await stats(client))["by_class"]["batch"]["queued"] == 4

    await until(batch_queued, "4 batch items queued behind the interactive request")
    queued_seen = time.perf_counter()  # the batch has started in the gateway by now
    s = await stats(client)
    assert s["by_class"]["interactive"] == {"queued": 0, "running": 1}
    assert s["tenants"]["nightly"]["text"]["batch"] == {"queued": 4, "running": 0}
    assert s["tenants"]["nightly"]["text"]["interactive"] == {"queued": 0, "running": 0}
    assert received(engine, tag) == [], "no batch item reached the engine while the slot was taken"
    opening = time.perf_counter()  # no item can finish before the gate opens
    await engine.open(gate)
    assert (await live).status_code == 200
    resp = await batch
    answered_at = time.perf_counter()
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["total"], out["succeeded"], out["failed"], out["kind"]) == (10, 8, 2, "text")
    # Not a speed bound: the gateway (same process, same clock) must report the span the batch ran, which contains
    # the test's look at its queued items and lies within the client's round trip (rounded to 1 ms).
    assert opening - queued_seen - 0.0005 <= out["wall_seconds"] <= answered_at - sent_at + 0.0005, out
    assert out["wall_seconds"] > 0, out
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
