"""The registry's loads, with llama.cpp replaced by a recorder: what each model is loaded with."""

from __future__ import annotations

import asyncio
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


async def test_a_model_just_loaded_is_not_evicted_before_its_request_uses_it(
    tmp_path: Path, loads: list[dict[str, Any]]
) -> None:
    """Room for one model: a request for b evicts a and loads b; a request for a arrives meanwhile and waits for
    room. b's load must reach b's request first (evicted in between, that request was left a closed model)."""
    registry = _registry(tmp_path, engine_max_loaded_models=1)
    a, b = entry(name="a:1", digest="sha256:a"), entry(name="b:1", digest="sha256:b")
    still_loaded: dict[str, bool] = {}

    async def ask(wanted: ModelEntry) -> None:
        async with registry.use(wanted, None, None) as (model, _):
            still_loaded[wanted.name] = model in registry.loaded()

    try:
        await registry.load(a, None, None)
        await asyncio.wait_for(asyncio.gather(ask(b), ask(a)), 10)
    finally:
        await registry.close()
    assert still_loaded == {"b:1": True, "a:1": True}
    assert [c["name"] for c in loads] == ["a:1", "b:1", "a:1"]


async def test_a_request_that_gives_up_its_model_lets_others_evict_it(
    tmp_path: Path, loads: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request holding b from eviction (waiting to reload it) goes away: a request waiting for room gets it."""
    registry = _registry(tmp_path, engine_max_loaded_models=1)
    a, b = entry(name="a:1", digest="sha256:a"), entry(name="b:1", digest="sha256:b")
    try:
        await registry.load(b, None, None)
        monkeypatch.setattr(registry, "_wait_idle", lambda name: asyncio.Event().wait())  # parks the reload
        reload_b = asyncio.create_task(registry.load(b, 512, None))  # another context size: waits to reload b
        await _settle()
        load_a = asyncio.create_task(registry.load(a, None, None))
        await _settle()
        assert not load_a.done() and [m.entry.name for m in registry.loaded()] == ["b:1"], "b is spoken for"
        reload_b.cancel()
        await asyncio.wait_for(load_a, 10)
    finally:
        await registry.close()
    assert [m.entry.name for m in registry.loaded()] in ([], ["a:1"])
    assert [c["name"] for c in loads] == ["b:1", "a:1"]


async def _settle() -> None:
    """Let every task that can run, run (bounded)."""
    for _ in range(20):
        await asyncio.sleep(0)


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
