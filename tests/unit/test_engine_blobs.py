"""Blobs on the engine: upload (streamed, digest checked, size limited, nothing kept on failure), presence, and the
store's orphan blobs."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from shared_ollama.engine import blobs
from shared_ollama.engine.blobs import BlobTooLarge, DigestMismatch, orphan_blobs, receive_blob
from shared_ollama.engine.server import create_engine_app
from shared_ollama.engine.store import ModelStore
from shared_ollama.settings import Settings
from shared_ollama.web import ClientDisconnected
from tests.unit.test_engine_store import write_gguf

DATA = b"x" * 3_000_000  # several write blocks


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _chunks(data: bytes, size: int = 65536, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        if fail_at is not None and start >= fail_at:
            raise ClientDisconnected
        yield data[start : start + size]


def _leftovers(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.iterdir()) if store.blobs.is_dir() else []


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


async def test_a_blob_is_written_under_its_digest(store: ModelStore) -> None:
    path = await receive_blob(store, digest_of(DATA), _chunks(DATA), limit=len(DATA))
    assert path == store.blob_path(digest_of(DATA))
    assert path.read_bytes() == DATA
    assert _leftovers(store) == [path.name], "no partial file is left"


async def test_other_bytes_are_a_mismatch_and_nothing_is_kept(store: ModelStore) -> None:
    with pytest.raises(DigestMismatch, match=r"digest mismatch, expected .sha256:0+., got .sha256:"):
        await receive_blob(store, "sha256:" + "0" * 64, _chunks(DATA), limit=len(DATA))
    assert _leftovers(store) == []


async def test_a_blob_over_the_limit_is_refused_and_nothing_is_kept(store: ModelStore) -> None:
    with pytest.raises(BlobTooLarge, match="limit of 1000 bytes"):
        await receive_blob(store, digest_of(DATA), _chunks(DATA), limit=1000)
    assert _leftovers(store) == []


async def test_an_upload_cut_off_leaves_nothing(store: ModelStore) -> None:
    with pytest.raises(ClientDisconnected):
        await receive_blob(store, digest_of(DATA), _chunks(DATA, fail_at=2_000_000), limit=len(DATA))
    assert _leftovers(store) == []


@pytest.fixture
def client(store: ModelStore) -> Iterator[TestClient]:
    with TestClient(create_engine_app(Settings(_env_file=None, models_dir=store.root, max_blob_bytes=4_000_000))) as c:
        yield c


def test_head_post_head(client: TestClient, store: ModelStore) -> None:
    digest = digest_of(DATA)
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    assert client.post(f"/api/blobs/{digest}", content=DATA).status_code == 201
    assert client.head(f"/api/blobs/{digest}").status_code == 200
    again = client.post(f"/api/blobs/{digest}", content=b"not even read")
    assert again.status_code == 200, "a blob already there is not uploaded again"
    assert store.blob_path(digest).read_bytes() == DATA
    dashed = client.head(f"/api/blobs/{digest.replace(':', '-')}")
    assert dashed.status_code == 200, "Ollama's file-name form of a digest works too"


def test_refusals_over_http(client: TestClient, store: ModelStore) -> None:
    bad = client.head("/api/blobs/sha256:123")
    assert bad.status_code == 400
    mismatch = client.post(f"/api/blobs/sha256:{'0' * 64}", content=DATA)
    assert mismatch.status_code == 400
    assert mismatch.json()["error"].startswith("digest mismatch")
    big = b"y" * 4_000_001
    declared = client.post(f"/api/blobs/{digest_of(big)}", content=big)
    assert declared.status_code == 413
    assert "the limit is 4000000 bytes (max_blob_bytes)" in declared.json()["error"]

    def stream() -> Iterator[bytes]:  # no Content-Length: refused once the bytes pass the limit
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    chunked = client.post(f"/api/blobs/{digest_of(big)}", content=stream())
    assert chunked.status_code == 413
    assert "larger than the limit of 4000000 bytes" in chunked.json()["error"]
    assert _leftovers(store) == []


def test_orphans_are_blobs_no_manifest_names(store: ModelStore, tmp_path: Path) -> None:
    kept = store.add_gguf("kept:1b", write_gguf(tmp_path / "a.gguf"), capabilities=["completion"])
    adapter = store.add_blob(write_gguf(tmp_path / "lora.gguf", context=64))[0]
    store.put(kept.__class__(**{**kept.__dict__, "name": "with-lora:1b", "adapters": [adapter]}))
    orphan = store.add_blob(write_gguf(tmp_path / "b.gguf", context=128))[0]
    orphan_path = store.blob_path(orphan)
    part_link = orphan_path.with_name(orphan_path.name + "-00001-of-00002.gguf")
    part_link.symlink_to(orphan_path.name)
    (store.blobs / ".partial-upload-x").write_bytes(b"in progress")
    assert orphan_blobs(store) == [orphan_path, part_link]
    (store.manifests / "broken.json").mkdir()  # a manifest that cannot be read: nothing is an orphan then
    with pytest.raises(OSError):
        orphan_blobs(store)


def test_a_store_without_blobs_has_no_orphans(store: ModelStore) -> None:
    assert orphan_blobs(store) == []


def test_a_blob_the_disk_cannot_hold_is_507_and_nothing_is_kept(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, models_dir=store.root, min_free_disk_bytes=1 << 60)
    with TestClient(create_engine_app(settings)) as client:
        declared = client.post(f"/api/blobs/{digest_of(DATA)}", content=DATA)
    assert declared.status_code == 507
    assert "min_free_disk_bytes" in declared.json()["error"]

    def full(self: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blobs._Partial, "write", full)
    with TestClient(create_engine_app(Settings(_env_file=None, models_dir=store.root))) as client:
        filled = client.post(f"/api/blobs/{digest_of(DATA)}", content=DATA)
    assert filled.status_code == 507
    assert "filled up during the upload" in filled.json()["error"]
    assert _leftovers(store) == []
