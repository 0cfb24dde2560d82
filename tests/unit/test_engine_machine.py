"""What the engine takes from the machine: thread shares, the prompt cache's bound, other busy engines."""

from __future__ import annotations

import logging
from typing import Any

import psutil
import pytest

from shared_ollama.engine.machine import (
    ProcessSample,
    busy_engines,
    gpu_devices,
    is_engine,
    prompt_cache_mib,
    sample_engines,
    thread_share,
    warn_if_busy_engines,
)

GIB = 2**30


@pytest.mark.parametrize(
    ("configured", "cores", "models", "expected"),
    [
        (0, 8, 1, 8),  # alone: every physical core
        (0, 8, 2, 4),  # a second model loaded beside it: half
        (0, 8, 3, 2),
        (0, 2, 2, 1),  # the 2-core machine of the report: never 2 + 2 threads on 2 cores
        (0, 2, 3, 1),  # never below one thread
        (0, 1, 1, 1),
        (0, 0, 0, 1),  # nonsense counts still give a runnable model
        (6, 2, 3, 6),  # an explicit setting wins
    ],
)
def test_thread_share(configured: int, cores: int, models: int, expected: int) -> None:
    assert thread_share(configured, cores, models) == expected


@pytest.mark.parametrize(
    ("configured", "ram", "expected"),
    [
        (None, 64 * GIB, 1024),  # capped at 1 GiB on a big machine
        (None, 16 * GIB, 819),  # 5 % of 16 GiB
        (None, 4 * GIB, 204),
        (None, 1, 1),  # never 0 (which would turn the cache off) by accident
        (0, 64 * GIB, 0),  # off, as asked
        (-1, 64 * GIB, -1),  # unbounded, as asked
        (300, 4 * GIB, 300),
    ],
)
def test_prompt_cache_bound(configured: int | None, ram: int, expected: int) -> None:
    assert prompt_cache_mib(configured, ram) == expected


@pytest.mark.parametrize(
    ("name", "cmdline", "expected"),
    [
        ("ollama", ["/usr/local/bin/ollama", "serve"], True),
        ("ollama", ["/usr/local/bin/ollama", "runner", "--model", "x"], True),
        ("llama-server", ["llama-server", "-m", "x.gguf"], True),
        ("python3", ["python", "-c", "import xllamacpp; ..."], True),
        ("python3", ["/venv/bin/python", "-m", "shared_ollama.cli", "engine", "--port", "1"], True),
        ("shared-ollama", ["/venv/bin/shared-ollama", "engine"], True),
        ("python3", ["/venv/bin/python", "-m", "shared_ollama.cli", "serve"], False),  # a gateway
        ("python3", ["python", "-m", "pytest", "tests/unit"], False),
        ("bash", [], False),
    ],
)
def test_engine_processes_are_recognised(name: str, cmdline: list[str], expected: bool) -> None:
    assert is_engine(name, cmdline) is expected


def _sample(pid: int, name: str, cpu: float, *cmdline: str) -> ProcessSample:
    return ProcessSample(pid, name, cmdline, cpu)


def test_busy_engines_are_the_others_using_cpu() -> None:
    samples = [
        _sample(10, "ollama", 180.0, "ollama", "runner"),
        _sample(11, "ollama", 0.5, "ollama", "serve"),  # idle: no warning
        _sample(12, "python3", 95.0, "python", "-m", "shared_ollama.cli", "engine"),  # ourselves
        _sample(13, "python3", 300.0, "python", "train.py"),  # busy, but not an engine
        _sample(14, "llama-server", 40.0, "llama-server"),
    ]
    busy = busy_engines(samples, own={12})
    assert [s.pid for s in busy] == [10, 14]


class FakeProcess:
    """A psutil.Process as process_iter yields it, with scripted CPU readings."""

    def __init__(self, pid: int, name: str, cmdline: list[str], *readings: float, gone: bool = False) -> None:
        self.pid = pid
        self.info: dict[str, Any] = {"pid": pid, "name": name, "cmdline": cmdline}
        self._readings = list(readings)
        self._gone = gone
        self.calls = 0

    def cpu_percent(self, interval: float | None = None) -> float:
        assert interval is None, "the scan never blocks per process"
        self.calls += 1
        if self._gone and self.calls > 1:
            raise psutil.NoSuchProcess(self.pid)
        return self._readings.pop(0)


def test_sampling_reads_only_engines_once_around_one_pause() -> None:
    engine = FakeProcess(20, "ollama", ["ollama", "serve"], 0.0, 150.0)
    other = FakeProcess(21, "python3", ["python", "app.py"], 0.0, 99.0)
    vanished = FakeProcess(22, "llama-server", ["llama-server"], 0.0, gone=True)
    pauses: list[float] = []
    samples = sample_engines(0.5, processes=lambda: [engine, other, vanished], sleep=pauses.append)
    assert pauses == [0.5]
    assert samples == [ProcessSample(20, "ollama", ("ollama", "serve"), 150.0)]
    assert other.calls == 0, "processes that are not engines are not sampled"


def test_sampling_without_engines_does_not_wait() -> None:
    pauses: list[float] = []
    assert sample_engines(1.0, processes=lambda: [], sleep=pauses.append) == []
    assert pauses == []


def test_sampling_is_bounded() -> None:
    many = [FakeProcess(100 + i, "ollama", ["ollama"], 0.0, 50.0) for i in range(500)]
    samples = sample_engines(0.0, processes=lambda: many, sleep=lambda _: None)
    assert len(samples) == 64


def test_a_busy_engine_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    samples = [_sample(30, "ollama", 120.0, "ollama", "runner"), _sample(31, "python3", 50.0, "x", "xllamacpp")]
    with caplog.at_level(logging.WARNING, logger="shared_ollama.engine.machine"):
        busy = warn_if_busy_engines({31}, samples)
    assert [s.pid for s in busy] == [30]
    [record] = caplog.records
    assert "another LLM engine is busy" in record.getMessage()
    assert "pid 30" in record.getMessage()
    assert "pid 31" not in record.getMessage()


def test_no_busy_engine_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared_ollama.engine.machine"):
        assert warn_if_busy_engines(set(), [_sample(40, "ollama", 1.0, "ollama")]) == []
    assert caplog.records == []


def test_gpu_devices_count_gpus_not_the_cpu() -> None:
    import xllamacpp

    kind = xllamacpp.ggml_backend_dev_type
    assert gpu_devices([{"name": "CPU", "type": kind.GGML_BACKEND_DEVICE_TYPE_CPU}]) == 0
    devices = [
        {"name": "CPU", "type": kind.GGML_BACKEND_DEVICE_TYPE_CPU},
        {"name": "CUDA0", "type": kind.GGML_BACKEND_DEVICE_TYPE_GPU},
        {"name": "iGPU", "type": kind.GGML_BACKEND_DEVICE_TYPE_IGPU},
        {"name": "BLAS", "type": kind.GGML_BACKEND_DEVICE_TYPE_ACCEL},
    ]
    assert gpu_devices(devices) == 2
