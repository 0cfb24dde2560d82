"""The JSON log writer: records queued while it lingers go out in one write per destination, none is lost.

The writer is a thread; the tests observe it through the queue (bounded polling) and through what it wrote, never
through time.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from pathlib import Path

import orjson
import pytest

from shared_ollama.logs import JsonFormatter, _Writer
from tests.support.processes import poll

GUARD = 10.0
"""A linger longer than any test: the writer then writes only when told to stop."""


class _Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _record(n: int) -> logging.LogRecord:
    return logging.LogRecord("shared_ollama.test", logging.INFO, "", 0, "line %d", (n,), None)


def _stderr(monkeypatch: pytest.MonkeyPatch) -> _Stream:
    """The writer's stderr, replaced in the test itself (output capturing sets its own around each phase)."""
    stream = _Stream()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def _stop(writer: _Writer, records: queue.SimpleQueue[logging.LogRecord | None]) -> None:
    records.put(None)
    writer.stopping.set()
    writer.join(timeout=GUARD)
    assert not writer.is_alive()


def test_records_queued_while_it_lingers_go_out_in_one_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stderr = _stderr(monkeypatch)
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _Writer(records, tmp_path / "api.log", linger=GUARD)
    writer.start()
    records.put(_record(0))
    poll(records.empty, "the writer took the first record")  # and lingers now, waiting for more
    for n in range(1, 50):
        records.put(_record(n))
    _stop(writer, records)
    assert len(stderr.writes) == 1, "one write for the whole batch, not one per record"
    lines = stderr.writes[0].splitlines()
    assert [orjson.loads(line)["msg"] for line in lines] == [f"line {n}" for n in range(50)]
    assert (tmp_path / "api.log").read_text() == stderr.writes[0]


def test_a_lone_record_is_written_without_being_flushed(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _Writer(records, None, linger=0.01)
    writer.start()
    try:
        records.put(_record(7))
        poll(lambda: bool(stderr.writes), "the record written after the linger")
        assert orjson.loads(stderr.writes[0])["msg"] == "line 7"
    finally:
        _stop(writer, records)


def test_stopping_writes_out_what_is_queued_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = _stderr(monkeypatch)
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _Writer(records, None, linger=GUARD)
    writer.start()
    records.put(_record(1))
    records.put(_record(2))
    _stop(writer, records)  # well before the linger would end
    assert [orjson.loads(line)["msg"] for line in "".join(stderr.writes).splitlines()] == ["line 1", "line 2"]


def test_each_lines_timestamp_is_its_records_own_across_seconds() -> None:
    formatter = JsonFormatter()
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_699_999_999.25, 1_700_000_001.75):
        record = _record(0)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(record.msecs):03d}Z"
        assert orjson.loads(formatter.format(record))["ts"] == expected
