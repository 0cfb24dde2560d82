"""Analytics shared by gateway replicas: on one machine through one SQLite file (``analytics_path``), on different
machines through Redis (``analytics_share``).

Two real gateway processes (the ``gateways`` fixture: ``shared-ollama serve`` against the scripted engine) write
their requests either to one file, or to files of their own with one Redis, and each one's ``/api/v1/analytics`` and
``/api/v1/usage`` show both replicas' requests. Then the store itself: a writer in another process and one here
write batches at once while this one also runs retention passes — every batch lands and no write fails.
Every wait is bounded; every process started here is stopped.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.records import RequestRecord
from tests.support.observability import (
    CHAT_ROUTE,
    Gateways,
    JsonDict,
    analytics,
    fake_chat,
    groups_by_key,
    project,
    until,
)
from tests.support.processes import poll

pytestmark = pytest.mark.integration  # the scripted engine, not the real one

PER_REPLICA = 6


def _send(url: str, tenant: str) -> list[int]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [
            client.post(CHAT_ROUTE, json=fake_chat(), headers=project(tenant)).status_code for _ in range(PER_REPLICA)
        ]


def _both(client: httpx.Client) -> JsonDict | None:
    """The replica's analytics once they count both replicas' requests."""
    result = analytics(client, window="1h", group_by="tenant")
    return result if result["totals"]["requests"] == 2 * PER_REPLICA else None


def _both_counted_by_each(urls: tuple[str, str], what: str) -> None:
    """Both replicas' requests sent at once; then each replica's analytics and usage count both, each once."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # both replicas write at the same time
        statuses = list(pool.map(_send, urls, ["from-one", "from-two"]))
    assert statuses == [[200] * PER_REPLICA] * 2
    for url in urls:
        with httpx.Client(base_url=url, timeout=30) as client:
            # a query writes its own replica's pending records; the other's arrive later (``what``)
            result = until(lambda: _both(client), what)
            usage = client.get("/api/v1/usage", params={"window": "1h", "group_by": "tenant"})
        tenants = groups_by_key(result)
        assert tenants["from-one"]["requests"] == tenants["from-two"]["requests"] == PER_REPLICA, (url, result)
        assert usage.status_code == 200, usage.text
        assert {row["tenant"]: row["requests"] for row in usage.json()["rows"]} == {
            "from-one": PER_REPLICA,
            "from-two": PER_REPLICA,
        }, url


def test_two_gateway_replicas_share_one_analytics_file(gateways: Gateways, tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "analytics.sqlite3"
    env = {"SHARED_OLLAMA_ANALYTICS_PATH": str(shared)}
    one, _ = gateways.start(tmp_path / "one", "shared-one", **env)
    two, _ = gateways.start(tmp_path / "two", "shared-two", **env)
    _both_counted_by_each((one, two), "both replicas' requests in the shared file")
    for data_dir in ("one", "two"):
        assert not (tmp_path / data_dir / "analytics.sqlite3").exists(), "nothing in the replicas' own data dirs"


def test_replicas_on_different_machines_share_analytics_through_redis(
    gateways: Gateways, tmp_path: Path, redis_url: str
) -> None:
    """Files of their own (as on two machines), one Redis: each replica's analytics and usage count both."""
    env = {"SHARED_OLLAMA_REDIS_URL": redis_url, "SHARED_OLLAMA_ANALYTICS_STREAM": f"analytics:{tmp_path.name}"}
    one, _ = gateways.start(tmp_path / "one", "redis-one", **env)
    two, _ = gateways.start(tmp_path / "two", "redis-two", **env)
    _both_counted_by_each((one, two), "the other replica's requests, imported from the stream")
    for data_dir in ("one", "two"):  # each file has every request once
        assert sum(_count(tmp_path / data_dir / "analytics.sqlite3").values()) == 2 * PER_REPLICA


_OTHER_WRITER = """
import asyncio, pathlib, sys, time
from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.records import RequestRecord

async def main(path, batches, size, now, signals):
    store = AnalyticsStore(path, flush_interval=3600, batch_size=10**9)
    await store.start()
    (signals / "ready").touch()
    deadline = time.monotonic() + 60
    while not (signals / "go").exists():  # bounded wait for the test's signal, so both write at once
        assert time.monotonic() < deadline, "no go signal"
        time.sleep(0.01)
    try:
        for b in range(batches):
            for i in range(size):
                ts = 1.0 if i % 5 == 0 else now  # some rows past the retention: the purges' work
                store.add(RequestRecord(ts=ts, request_id=f"other-{b}-{i}", surface="ollama", route="/api/chat"))
            await store.flush()  # raises if the write failed (the other process's lock held past the timeout)
    finally:
        await store.close()
    assert store.stats()["written"] == batches * size and store.stats()["dropped"] == 0, store.stats()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), pathlib.Path(sys.argv[5])))
"""
BATCHES, SIZE = 300, 40


def _count(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT substr(request_id, 1, 5), count(*) FROM requests GROUP BY 1").fetchall()
    finally:
        conn.close()
    return dict(rows)


async def test_a_writer_in_another_process_and_retention_passes_here_do_not_fail_each_other(tmp_path: Path) -> None:
    path = tmp_path / "analytics.sqlite3"
    now = time.time()
    here = AnalyticsStore(path, flush_interval=3600, batch_size=10**9)
    await here.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARED_OLLAMA_")}
    args = [str(path), str(BATCHES), str(SIZE), str(now), str(tmp_path)]
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OTHER_WRITER, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        await asyncio.to_thread(
            poll, lambda: (tmp_path / "ready").exists() or other.returncode is not None, "the other writer's store open"
        )
        (tmp_path / "go").touch()
        purged = 0
        for b in range(BATCHES):  # bounded: as many batches as the other writer, a retention pass after each
            for i in range(SIZE):
                ts = 1.0 if i % 5 == 0 else now
                here.add(RequestRecord(ts=ts, request_id=f"here-{b}-{i}", surface="ollama", route="/api/chat"))
            await here.flush()  # raises if the write failed
            purged += await here._worker.run(lambda conn: here._purge(conn, now=now))
        output, _ = await asyncio.wait_for(other.communicate(), timeout=120)
    finally:
        if other.returncode is None:
            other.kill()
            await asyncio.wait_for(other.wait(), timeout=10)
        await here.close()
    assert other.returncode == 0, output.decode(errors="replace")[-3000:]
    assert here.stats()["written"] == BATCHES * SIZE and here.stats()["dropped"] == 0
    assert purged > 0, "the retention passes had rows to delete"

    third = AnalyticsStore(path)  # a replica started later: its start-up pass purges what is left past retention
    await third.start()
    try:
        result = await third.query(window="1h", tenant=None, group_by=None, now=now + 1)
    finally:
        await third.close()
    kept = BATCHES * SIZE * 4 // 5
    assert _count(path) == {"here-": kept, "other": kept}
    assert result["totals"]["requests"] == 2 * kept, "one store's query shows both writers' rows"
