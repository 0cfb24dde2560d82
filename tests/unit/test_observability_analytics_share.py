"""The SQLite side of shared analytics (``analytics_share``), without Redis: rows published by other replicas
made into rows here, each entry imported once, and the imported marks kept bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from shared_ollama.service.observability.analytics_rows import NAMES, SCHEMA, mapped_row, record_row
from shared_ollama.service.observability.analytics_share import stream_entries
from shared_ollama.service.observability.analytics_share_db import (
    SHARE_SCHEMA,
    claim_publishing,
    import_rows,
    outbox_batch,
    outbox_sent,
    outbox_size,
    purge_shared,
    queue_written,
    read_position,
    release_publishing,
    store_identity,
)
from shared_ollama.service.observability.records import RequestRecord
from shared_ollama.service.observability.sqlite_db import open_database


def _open(tmp_path: Path) -> sqlite3.Connection:
    return open_database(tmp_path / "analytics.sqlite3", SCHEMA + SHARE_SCHEMA)


def test_a_row_from_an_older_replica_gets_the_columns_it_lacks_as_their_defaults() -> None:
    row = mapped_row({"ts": 5, "request_id": "r", "tenant": "t", "status": 200})
    values = dict(zip(NAMES, row, strict=True))
    assert values["ts"] == 5.0 and values["status"] == 200 and values["tenant"] == "t"
    assert values["host"] == "" and values["prompt_tokens"] == 0 and values["ttft"] is None and values["user"] is None


def test_a_recorded_row_comes_back_the_same_through_its_mapping() -> None:
    record = RequestRecord(ts=7.5, request_id="x", surface="openai", route="/v1/chat", user="u", ttft=0.2, host="h")
    row = record_row(record)
    assert mapped_row(dict(zip(NAMES, row, strict=True))) == row


@pytest.mark.parametrize(
    "values",
    [
        {"tenant": "t"},
        {"ts": 1.0},
        {"ts": "soon", "request_id": "x"},
        {"ts": 1, "request_id": "x", "status": "ok"},
        {"ts": float("inf"), "request_id": "x"},
        {"ts": 1, "request_id": "x", "status": 2**70},
    ],
)
def test_a_row_without_its_time_or_id_or_with_a_wrong_value_is_refused(values: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        mapped_row(values)


def test_each_entry_is_imported_once_and_the_read_position_is_kept(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    store_id, position = store_identity(conn, stream="s")
    assert position == "0-0" and store_identity(conn, stream="s") == (store_id, "0-0")  # the id is kept
    row = mapped_row({"ts": 1.0, "request_id": "a"})
    assert import_rows(conn, entries=[("10-0", "x", 1, row), ("10-1", "x", 2, row)], stream="s", last="10-1") == (2, 0)
    # the same row sent again under a new entry id, and an entry this file's follower already read: both skipped
    again = [("10-1", "x", 3, row), ("11-0", "x", 2, row), ("12-0", "y", 2, row)]
    assert import_rows(conn, entries=again, stream="s", last="12-0") == (1, 0)
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 3
    assert store_identity(conn, stream="s")[1] == "12-0" and store_identity(conn, stream="t")[1] == "0-0"
    assert import_rows(conn, entries=[], stream="s", last="13-5") == (0, 0)  # only its own rows read: it moves on
    assert read_position(conn, stream="s") == "13-5"


def test_an_entry_the_file_refuses_is_skipped_alone(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    row = mapped_row({"ts": 1.0, "request_id": "a"})
    entries = [("1-0", "x", 1, row), ("2-0", "x", 2**70, row), ("3-0", "x", 3, row)]  # a queue number SQLite refuses
    assert import_rows(conn, entries=entries, stream="s", last="3-0") == (2, 1)
    assert read_position(conn, stream="s") == "3-0"


def test_a_file_made_on_another_host_gets_an_id_of_its_own(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    here = store_identity(conn, stream="s", host="a")[0]
    assert store_identity(conn, stream="s", host="a")[0] == here  # replicas on one machine: one id
    assert store_identity(conn, stream="s", host="b")[0] != here  # the volume copied to another machine


def test_rows_written_are_queued_in_order_until_sent(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    rows = [record_row(RequestRecord(ts=float(i), request_id=f"r{i}", surface="o", route="/")) for i in range(3)]
    queue_written(conn, rows)
    queued = outbox_batch(conn, limit=10)
    assert [orjson.loads(body)["request_id"] for _, body in queued] == ["r0", "r1", "r2"]
    outbox_sent(conn, upto=queued[1][0])
    assert [orjson.loads(body)["request_id"] for _, body in outbox_batch(conn, limit=10)] == ["r2"]
    assert outbox_size(conn) == 1


def test_retention_forgets_import_marks_and_queued_rows_past_it(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    old, new = mapped_row({"ts": 1.0, "request_id": "old"}), mapped_row({"ts": 100.0, "request_id": "new"})
    import_rows(conn, entries=[("1-0", "x", 1, old), ("2-0", "x", 2, new)], stream="s", last="2-0")
    queue_written(conn, [old, new])
    purge_shared(conn, before=50.0, chunk=1)  # one row per statement: the loop runs to the end
    assert conn.execute("SELECT ref FROM analytics_imported").fetchall() == [(2,)]
    assert [orjson.loads(body)["request_id"] for _, body in outbox_batch(conn, limit=10)] == ["new"]


@pytest.mark.parametrize(
    ("answer", "ids"),
    [
        ([[b"s", [(b"1-0", {b"s": b"x"}), (b"2-0", {})]]], ["1-0", "2-0"]),  # RESP2
        ({b"s": [[(b"1-0", {b"s": b"x"}), (b"2-0", {})]]}, ["1-0", "2-0"]),  # RESP3, legacy replies
        ({"s": [["1-0", {"s": "x"}], ["2-0", {}]]}, ["1-0", "2-0"]),  # RESP3, decoded
        ({b"s": [[(b"1-0", {})]]}, ["1-0"]),
        ([], []),
        (None, []),
    ],
)
def test_stream_entries_come_out_of_every_reply_shape(answer: object, ids: list[str]) -> None:
    entries = stream_entries(answer)
    assert [e[0].decode() if isinstance(e[0], bytes) else e[0] for e in entries] == ids


def test_one_replica_on_a_file_publishes_at_a_time(tmp_path: Path) -> None:
    conn = _open(tmp_path)
    assert claim_publishing(conn, me="a", now=100.0, lease=10.0)
    assert not claim_publishing(conn, me="b", now=105.0, lease=10.0)  # a holds the turn until 110
    assert claim_publishing(conn, me="a", now=106.0, lease=10.0)  # renewed: now until 116
    assert not claim_publishing(conn, me="b", now=112.0, lease=10.0)
    assert claim_publishing(conn, me="b", now=117.0, lease=10.0)  # a stopped renewing: b takes over
    release_publishing(conn, me="a")  # not a's any more: nothing changes
    assert not claim_publishing(conn, me="a", now=118.0, lease=10.0)
    release_publishing(conn, me="b")  # b stops: a takes the turn at once
    assert claim_publishing(conn, me="a", now=118.0, lease=10.0)
