"""The stored responses: per tenant, expiring after their TTL (a fake clock), purged, surviving a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared_ollama.service.responses.store import ResponseStore, StoredResponse

TTL = 100.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored(response_id: str = "resp_1", text: str = "Paris") -> StoredResponse:
    return StoredResponse(
        response={"id": response_id, "object": "response", "output_text_for_test": text},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": []}],
        conversation=[{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": text}],
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[ResponseStore]:
    responses = ResponseStore(tmp_path / "responses.sqlite3", ttl_seconds=TTL, purge_interval=10.0, clock=clock)
    await responses.start()
    try:
        yield responses
    finally:
        await responses.close()


def rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


async def test_a_tenant_gets_back_what_it_stored(store: ResponseStore) -> None:
    await store.put("alpha", stored())
    got = await store.get("alpha", "resp_1")
    assert got == stored()
    assert got is not None and got.id == "resp_1"


async def test_another_tenants_response_is_not_there(store: ResponseStore) -> None:
    await store.put("alpha", stored())
    assert await store.get("beta", "resp_1") is None
    assert await store.delete("beta", "resp_1") is False
    assert await store.get("alpha", "resp_1") is not None  # untouched by the other tenant's delete
    await store.put("beta", stored(text="Rome"))  # the same id for another tenant is another response
    beta = await store.get("beta", "resp_1")
    alpha = await store.get("alpha", "resp_1")
    assert beta is not None and alpha is not None
    assert beta.conversation[-1]["content"] == "Rome" and alpha.conversation[-1]["content"] == "Paris"


async def test_delete_removes_it_once(store: ResponseStore) -> None:
    await store.put("alpha", stored())
    assert await store.delete("alpha", "resp_1") is True
    assert await store.get("alpha", "resp_1") is None
    assert await store.delete("alpha", "resp_1") is False


async def test_an_expired_response_is_gone_and_purged(store: ResponseStore, clock: Clock) -> None:
    await store.put("alpha", stored())
    clock.now += TTL - 1
    assert await store.get("alpha", "resp_1") is not None
    clock.now += 1
    assert await store.get("alpha", "resp_1") is None  # expired: invisible even before a purge
    assert await store.delete("alpha", "resp_1") is False
    assert rows(store.path) == 1
    await store.put("alpha", stored("resp_2"))  # a write after the purge interval purges
    assert rows(store.path) == 1
    assert await store.get("alpha", "resp_2") is not None


async def test_purge_deletes_only_expired_rows(store: ResponseStore, clock: Clock) -> None:
    await store.put("alpha", stored("resp_old"))
    clock.now += TTL / 2
    await store.put("alpha", stored("resp_new"))
    clock.now += TTL / 2
    assert await store.purge() == 1
    assert await store.get("alpha", "resp_new") is not None


async def test_responses_survive_a_restart_and_expired_ones_go_at_start(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "responses.sqlite3"
    first = ResponseStore(path, ttl_seconds=TTL, clock=clock)
    await first.start()
    await first.put("alpha", stored("resp_old"))
    clock.now += TTL / 2
    await first.put("alpha", stored("resp_new"))
    await first.close()
    clock.now += TTL / 2
    second = ResponseStore(path, ttl_seconds=TTL, clock=clock)
    await second.start()
    try:
        assert rows(path) == 1
        assert await second.get("alpha", "resp_new") is not None
    finally:
        await second.close()


async def test_a_store_that_is_not_started_says_so(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "r.sqlite3", ttl_seconds=TTL)
    with pytest.raises(RuntimeError, match="not started"):
        await store.get("alpha", "resp_1")
    with pytest.raises(ValueError):
        ResponseStore(tmp_path / "r.sqlite3", ttl_seconds=0)
