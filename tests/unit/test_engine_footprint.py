"""What a load takes, measured: the meter's arithmetic with fake probes, its one-load-at-a-time rule, and what the
registry and ``/api/ps`` make of it."""

from __future__ import annotations

import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.engine.footprint import Footprint, LoadMeter, believable, gpu_free
from shared_ollama.engine.registry import ModelRegistry
from shared_ollama.engine.runtime import LoadedModel
from shared_ollama.engine.store import ModelEntry
from shared_ollama.engine.views import running
from shared_ollama.settings import Settings
from tests.support.engine import entry

MIB = 1 << 20


class Probe:
    """A reading that moves by ``step`` each time it is taken (memory growing or shrinking over a load)."""

    def __init__(self, start: int, step: int) -> None:
        self.value, self.step = start, step

    def __call__(self) -> int:
        value = self.value
        self.value += self.step
        return value


def test_a_load_is_measured_as_the_growth_of_ram_and_the_drop_of_free_gpu_memory() -> None:
    meter = LoadMeter(rss=Probe(500 * MIB, 170 * MIB), vram_free=Probe(8000 * MIB, -300 * MIB))
    settled: list[str] = []
    result, footprint = meter.measure(lambda: "model", file_bytes=100 * MIB, settle=lambda: settled.append("x"))
    assert (result, footprint) == ("model", Footprint(170 * MIB, 300 * MIB))
    assert footprint is not None and footprint.total == 470 * MIB
    assert settled == ["x"], "memory being freed is waited for before the first reading"


def test_a_growth_smaller_than_half_the_files_is_not_believed() -> None:
    assert believable(Footprint(50 * MIB), 100 * MIB)
    assert not believable(Footprint(49 * MIB), 100 * MIB)
    shrinking = LoadMeter(rss=Probe(500 * MIB, -10 * MIB), vram_free=lambda: 0)
    assert shrinking.measure(lambda: 1, file_bytes=100 * MIB) == (1, None)


def test_a_failing_probe_gives_no_measurement_but_the_load_happens() -> None:
    def broken() -> int:
        raise OSError("no /proc")

    assert LoadMeter(rss=broken, vram_free=lambda: 0).measure(lambda: "m", file_bytes=1) == ("m", None)


def test_loads_are_measured_one_at_a_time() -> None:
    meter = LoadMeter(rss=lambda: 0, vram_free=lambda: 0)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> str:
        inside.set()
        release.wait(10)
        order.append("first")
        return "first"

    def second() -> str:
        order.append("second")
        return "second"

    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(meter.measure, first, 0)
        assert inside.wait(10)
        two = pool.submit(meter.measure, second, 0)
        release.set()
        assert (one.result(10)[0], two.result(10)[0]) == ("first", "second")
    assert order == ["first", "second"], "the second load waited for the first to be measured"


def test_free_gpu_memory_counts_gpus_only() -> None:
    devices = [
        {"type": "GGML_BACKEND_DEVICE_TYPE_CPU", "memory_free": 10**12},
        {"type": "GGML_BACKEND_DEVICE_TYPE_GPU", "memory_free": 8 * 10**9},
        {"type": "GGML_BACKEND_DEVICE_TYPE_IGPU", "memory_free": 10**9},
    ]
    assert gpu_free(devices) == 9 * 10**9
    assert gpu_free([]) == 0


class FakeStore:
    def blob_path(self, digest: str) -> Path:
        return Path("/nonexistent") / digest

    def model_path(self, entry: ModelEntry) -> Path:
        return self.blob_path(entry.digest)


async def test_the_registry_keeps_each_models_measured_footprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_load(
        entry: ModelEntry, gguf: Path, settings: Settings, num_ctx: int, executor: Executor, **_: Any
    ) -> LoadedModel:
        return LoadedModel(entry, None, num_ctx, 0, executor)

    monkeypatch.setattr(LoadedModel, "load", staticmethod(fake_load))
    registry = ModelRegistry(Settings(_env_file=None, data_dir=tmp_path), FakeStore())  # type: ignore[arg-type]
    registry.meter = LoadMeter(rss=Probe(0, 300 * MIB), vram_free=lambda: 0)
    try:
        await registry.load(entry(name="a:1", digest="sha256:a", size=200 * MIB), None, None)
        await registry.load(entry(name="b:1", digest="sha256:b", size=10_000 * MIB), None, None)
        loaded = {m.entry.name: m for m in registry.loaded()}
    finally:
        await registry.close()
    assert loaded["a:1"].footprint == Footprint(300 * MIB, 0)
    assert loaded["b:1"].footprint is None, "300 MiB cannot be a 10 GB model's: not believed"
    shown = running(loaded["a:1"])
    assert (shown["size"], shown["size_estimated"], shown["size_vram"]) == (300 * MIB, False, 0)
    guessed = running(loaded["b:1"])
    assert (guessed["size"], guessed["size_estimated"]) == (loaded["b:1"].memory_estimate, True)
