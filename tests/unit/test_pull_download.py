"""Partial downloads: hashed as written, resumed from what is on disk, verified, refused early by their header."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from shared_ollama.engine.pull.download import (
    DownloadCancelled,
    Expected,
    PartialFile,
    check_disk,
    in_thread,
    verify,
)
from shared_ollama.engine.pull.gguf_header import HEADER_BYTES
from shared_ollama.errors import BackendError, InsufficientStorage

DATA = bytes(range(256)) * 20_000  # 5 MB


def expected(data: bytes = DATA) -> Expected:
    return Expected(len(data), hashlib.sha256(data).hexdigest())


def test_the_digest_is_computed_as_bytes_are_written(tmp_path: Path) -> None:
    sizes: list[int] = []
    partial = PartialFile(tmp_path / "p.partial", expected(), on_size=sizes.append)
    assert partial.open() == 0
    for start in range(0, len(DATA), 1 << 20):
        partial.write(DATA[start : start + (1 << 20)])
    computed = partial.finish()
    assert computed == (hashlib.sha256(DATA).hexdigest(), None)
    assert sizes[0] == 0 and sizes[-1] == len(DATA) and sizes == sorted(sizes)
    assert verify(tmp_path / "p.partial", computed, expected(), "m.gguf") == f"sha256:{expected().sha256}"


def test_a_partial_file_is_resumed_from_its_size_with_its_bytes_hashed_again(tmp_path: Path) -> None:
    first = PartialFile(tmp_path / "p.partial", expected())
    first.open()
    first.write(DATA[:1_000_000])
    first.abandon()  # the pull went away: the bytes stay
    again = PartialFile(tmp_path / "p.partial", expected())
    assert again.open() == 1_000_000
    again.write(DATA[1_000_000:])
    assert again.finish()[0] == hashlib.sha256(DATA).hexdigest()


def test_a_source_that_ignores_the_range_starts_the_file_over(tmp_path: Path) -> None:
    partial = PartialFile(tmp_path / "p.partial", expected())
    partial.open()
    partial.write(b"wrong bytes from an earlier attempt")
    partial.seek(max(partial.tell() - 35, 0))  # what huggingface_hub's http_get does on a 200 to a range request
    partial.truncate()
    partial.write(DATA)
    assert partial.finish()[0] == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "p.partial").read_bytes() == DATA


def test_a_partial_file_longer_than_the_blob_is_not_resumed(tmp_path: Path) -> None:
    (tmp_path / "p.partial").write_bytes(DATA + b"more")
    assert PartialFile(tmp_path / "p.partial", expected()).open() == 0


def test_more_bytes_than_stated_are_refused(tmp_path: Path) -> None:
    partial = PartialFile(tmp_path / "p.partial", expected(b"abc"))
    partial.open()
    with pytest.raises(BackendError, match="more than the 3 bytes"):
        partial.write(b"abcd")


def test_a_mismatched_digest_deletes_the_download(tmp_path: Path) -> None:
    partial = PartialFile(tmp_path / "p.partial", expected())
    partial.open()
    partial.write(DATA[:-1] + b"X")
    computed = partial.finish()
    with pytest.raises(BackendError, match=r"digest mismatch for m\.gguf: expected sha256 .*deleted"):
        verify(tmp_path / "p.partial", computed, expected(), "m.gguf")
    assert not (tmp_path / "p.partial").exists()


def test_a_git_kept_file_is_verified_by_its_blob_id(tmp_path: Path) -> None:
    data = b"small file kept in git\n"
    blob_id = hashlib.sha1(f"blob {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()
    wanted = Expected(len(data), None, blob_id)
    partial = PartialFile(tmp_path / "p.partial", wanted)
    partial.open()
    partial.write(data)
    assert verify(tmp_path / "p.partial", partial.finish(), wanted, "f") == f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_the_header_is_inspected_once_when_the_first_megabyte_is_in(tmp_path: Path) -> None:
    seen: list[bytes] = []
    partial = PartialFile(tmp_path / "p.partial", expected(), inspect=seen.append)
    partial.open()
    partial.write(DATA[:1000])
    assert seen == []
    partial.write(DATA[1000 : HEADER_BYTES + 10])
    partial.write(DATA[HEADER_BYTES + 10 :])
    assert seen == [DATA[:HEADER_BYTES]]


def test_an_inspection_refusal_stops_the_download(tmp_path: Path) -> None:
    def refuse(head: bytes) -> None:
        raise ValueError("not a model")

    partial = PartialFile(tmp_path / "p.partial", expected(), inspect=refuse)
    partial.open()
    with pytest.raises(ValueError, match="not a model"):
        partial.write(DATA[: HEADER_BYTES + 1])


def test_a_cancelled_download_stops_at_its_next_write(tmp_path: Path) -> None:
    cancel = threading.Event()
    partial = PartialFile(tmp_path / "p.partial", expected(), cancelled=cancel.is_set)
    partial.open()
    partial.write(DATA[:10])
    cancel.set()
    with pytest.raises(DownloadCancelled):
        partial.write(DATA[10:20])
    partial.abandon()
    assert (tmp_path / "p.partial").read_bytes() == DATA[:10]


def test_the_disk_check_keeps_the_minimum_free(tmp_path: Path) -> None:
    check_disk(needed=100, free=1000, keep_free=900, root=tmp_path)
    check_disk(needed=0, free=0, keep_free=900, root=tmp_path)  # nothing to fetch
    with pytest.raises(InsufficientStorage, match=r"needs 101 bytes.*1000 free and 900 must stay free") as caught:
        check_disk(needed=101, free=1000, keep_free=900, root=tmp_path)
    assert caught.value.status == 507


async def test_a_cancelled_thread_is_told_and_waited_for() -> None:
    started, stop, ended = threading.Event(), threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        stop.wait(10)
        ended.set()

    task = asyncio.create_task(in_thread(work, on_cancel=stop.set))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stop.is_set() and ended.is_set()  # told, and finished before the cancellation came through
