"""``shared-ollama models prune`` (``cli_models.run_prune``): orphan blobs listed or removed, used ones kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_ollama.cli import main
from shared_ollama.engine.store import ModelStore
from tests.unit.test_engine_store import write_gguf


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.add_gguf("kept:1b", write_gguf(tmp_path / "a.gguf"), capabilities=["completion"])
    monkeypatch.setenv("SHARED_OLLAMA_MODELS_DIR", str(store.root))
    return store


def test_prune_lists_then_removes_orphans_only(
    store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = store.get("kept:1b")
    assert kept is not None
    orphan, size = store.add_blob(write_gguf(tmp_path / "b.gguf", context=64))
    name = store.blob_path(orphan).name
    assert main(["models", "prune", "--dry-run"]) == 0
    listed = capsys.readouterr()
    assert listed.out.splitlines() == [f"would remove\t{name}\t{size}"]
    assert f"1 orphan blob(s), would free {size} bytes" in listed.err
    assert store.blob_path(orphan).exists()
    assert main(["models", "prune"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed\t{name}\t{size}"]
    assert not store.blob_path(orphan).exists()
    assert store.blob_path(kept.digest).exists()
    assert main(["models", "prune"]) == 0
    assert capsys.readouterr().out == ""


def test_nothing_is_pruned_while_a_manifest_cannot_be_read(
    store: ModelStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan, _ = store.add_blob(write_gguf(tmp_path / "b.gguf", context=64))
    (store.manifests / "unreadable.json").mkdir()
    assert main(["models", "prune"]) == 1
    assert "nothing pruned" in capsys.readouterr().err
    assert store.blob_path(orphan).exists()
