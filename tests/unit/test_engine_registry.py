"""The registry's loads, with llama.cpp replaced by a recorder: what each model is loaded with."""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.engine.registry import ModelRegistry
from shared_ollama.engine.runtime import LoadedModel, llama_params
from shared_ollama.engine.store import ModelEntry
from shared_ollama.settings import Settings
from tests.support.engine import entry


class FakeStore:
    def blob_path(self, digest: str) -> Path:
        return Path("/nonexistent") / digest

    def model_path(self, entry: ModelEntry) -> Path:
        return self.blob_path(entry.digest)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every LoadedModel.load call's keyword arguments; the 'model' has no llama.cpp server behind it."""
    calls: list[dict[str, Any]] = []

    def fake_load(
        entry: ModelEntry, gguf: Path, settings: Settings, num_ctx: int, executor: Executor, **kwargs: Any
    ) -> LoadedModel:
        calls.append({"name": entry.name, **kwargs})
        return LoadedModel(entry, None, num_ctx, 0, executor, threads=int(kwargs.get("threads") or 0))

    monkeypatch.setattr(LoadedModel, "load", staticmethod(fake_load))
    return calls


def _registry(tmp_path: Path, **settings: object) -> ModelRegistry:
    values: dict[str, object] = {"data_dir": tmp_path, "engine_max_loaded_models": 3, **settings}
    return ModelRegistry(Settings(**values), FakeStore())  # type: ignore[arg-type]


async def test_models_loaded_together_share_the_physical_cores(tmp_path: Path, loads: list[dict[str, Any]]) -> None:
    registry = _registry(tmp_path)
    registry.cores = 4
    try:
        for name in ("a:1", "b:1", "c:1"):
            await registry.load(entry(name=name, digest=f"sha256:{name}"), None, None)
    finally:
        await registry.close()
    assert [(c["name"], c["threads"]) for c in loads] == [("a:1", 4), ("b:1", 2), ("c:1", 1)]


async def test_a_model_loaded_alone_again_gets_every_core(tmp_path: Path, loads: list[dict[str, Any]]) -> None:
    registry = _registry(tmp_path, engine_max_loaded_models=1)
    registry.cores = 2
    try:
        await registry.load(entry(name="a:1", digest="sha256:a"), None, None)
        await registry.load(entry(name="b:1", digest="sha256:b"), None, None)  # evicts a:1 first
    finally:
        await registry.close()
    assert [c["threads"] for c in loads] == [2, 2]


async def test_explicit_threads_and_cache_bound_win(tmp_path: Path, loads: list[dict[str, Any]]) -> None:
    registry = _registry(tmp_path, engine_threads=3, engine_cache_ram_mib=77)
    registry.cores = 16
    try:
        await registry.load(entry(name="a:1"), None, None)
    finally:
        await registry.close()
    assert loads == [{"name": "a:1", "threads": 3, "cache_ram_mib": 77}]


async def test_the_default_cache_bound_is_the_machines(tmp_path: Path, loads: list[dict[str, Any]]) -> None:
    registry = _registry(tmp_path)
    try:
        await registry.load(entry(name="a:1"), None, None)
    finally:
        await registry.close()
    assert 1 <= loads[0]["cache_ram_mib"] <= 1024, "bounded, far below llama.cpp's 8 GiB default"


def test_llama_params_carry_threads_and_the_cache_bound(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engine_num_parallel=2)
    params, num_ctx = llama_params(
        entry(), tmp_path / "m.gguf", settings, 1024, threads=3, cache_ram_mib=77, api_key="k3y"
    )
    assert params.cache_ram_mib == 77
    assert params.api_keys == ["k3y"], "llama.cpp's own loopback server for the model needs the key"
    assert params.cpuparams.n_threads == 3
    assert params.cpuparams_batch.n_threads == 3
    assert (params.n_parallel, params.n_ctx, num_ctx) == (2, 2048, 1024)
