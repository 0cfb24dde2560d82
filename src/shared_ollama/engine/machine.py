"""What the engine takes from the machine: CPU threads per model, the prompt cache's RAM, and whether another
llama.cpp engine is already busy on it.

llama.cpp's threads spin while they wait for each other, so more busy threads than cores does not share the CPU,
it collapses it (two models with all cores each on 2 cores went from 55 to 0.7 tokens/s). Hence the arithmetic
here: threads are a share of the physical cores, and the prompt cache has a bound sized from the machine's RAM.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger(__name__)

CACHE_RAM_CAP_MIB = 1024
"""Largest default prompt cache per model."""
CACHE_RAM_FRACTION = 0.05
"""Default prompt cache per model as a share of the machine's RAM (when that is less than the cap)."""
BUSY_CPU_PERCENT = 25.0
"""A process using at least this much of one core over the sample counts as busy."""
_ENGINE_NAMES = ("ollama", "llama-server", "ollama_llama_server")
_ENGINE_ARGS = ("xllamacpp", "llama-server", "shared_ollama.cli engine", "shared-ollama engine")
_MAX_CANDIDATES = 64
"""Processes sampled at most (the scan stays cheap on a machine running many engines)."""


def physical_cores() -> int:
    """Physical cores (hyper-threads share a core's arithmetic units, which llama.cpp keeps busy); logical
    cores when the physical count is unknown."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def thread_share(configured: int, cores: int, models: int) -> int:
    """CPU threads for a model being loaded while ``models`` are loaded or loading (this one included).

    An explicit ``SHARED_OLLAMA_ENGINE_THREADS`` wins. Otherwise the physical cores are split evenly among the
    models held at load time: a model alone gets every core (the common case keeps its full speed), a second
    model loaded beside it gets half, and so on. llama.cpp fixes a model's threads at load, so a model keeps its
    share until it is reloaded; the sum can exceed the cores only by what the models loaded earlier took, never
    by one full set of cores per model as before.
    """
    if configured > 0:
        return configured
    return max(1, max(1, cores) // max(1, models))


def prompt_cache_mib(configured: int | None, total_ram_bytes: int) -> int:
    """The bound of llama.cpp's host-memory prompt cache per model (``cache_ram_mib``), in MiB.

    llama.cpp keeps the state of prompts whose slot was taken by another request, to resume them without
    re-reading them; its default bound is 8 GiB per model, so under steady traffic of distinct prompts the
    engine's memory grows towards 8 GiB per loaded model. The default here is 5 % of the RAM, at most 1 GiB:
    a small model's 4k-token prompt is a few MiB, so that still holds dozens of conversations, while three
    loaded models stay within 15 % of the RAM (well below ``memory_high_percent``). An explicit setting wins
    (0 turns the cache off, -1 lifts the bound).
    """
    if configured is not None:
        return configured
    return max(1, min(CACHE_RAM_CAP_MIB, int(total_ram_bytes * CACHE_RAM_FRACTION) // 2**20))


def gpu_devices(devices: Iterable[dict[str, Any]] | None = None) -> int:
    """Devices llama.cpp can offload a model to (GPUs, integrated ones included): 0 on a CPU-only machine or
    with a CPU-only build. ``devices``: llama.cpp's device list (``xllamacpp.get_device_info()`` when None)."""
    if devices is None:
        import xllamacpp

        devices = xllamacpp.get_device_info()
    kinds = ("GGML_BACKEND_DEVICE_TYPE_GPU", "GGML_BACKEND_DEVICE_TYPE_IGPU")
    return sum(1 for device in devices if getattr(device.get("type"), "name", device.get("type")) in kinds)


def total_ram() -> int:
    return int(psutil.virtual_memory().total)


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process as seen by the scan: its CPU use (percent of one core) over the sample."""

    pid: int
    name: str
    cmdline: tuple[str, ...]
    cpu_percent: float


def is_engine(name: str, cmdline: Iterable[str]) -> bool:
    """Whether a process is an LLM engine on llama.cpp: Ollama, ``llama-server`` or an embedded engine."""
    base = name.lower()
    if base in _ENGINE_NAMES or base.startswith("ollama"):
        return True
    line = " ".join(cmdline)
    return any(arg in line for arg in _ENGINE_ARGS)


def busy_engines(
    samples: Iterable[ProcessSample], own: set[int], min_cpu: float = BUSY_CPU_PERCENT
) -> list[ProcessSample]:
    """The engines other than ``own`` (pids) using noticeable CPU, busiest first."""
    found = [s for s in samples if s.pid not in own and s.cpu_percent >= min_cpu and is_engine(s.name, s.cmdline)]
    return sorted(found, key=lambda s: -s.cpu_percent)


def _candidates(processes: Iterable[Any]) -> Iterator[Any]:
    """Engine-looking processes (bounded), each with its CPU counter started."""
    count = 0
    for proc in processes:
        info = getattr(proc, "info", None) or {}
        if not is_engine(str(info.get("name") or ""), info.get("cmdline") or ()):
            continue
        try:
            proc.cpu_percent(None)  # the first call starts the counter
        except (psutil.Error, OSError):
            continue
        yield proc
        count += 1
        if count >= _MAX_CANDIDATES:
            return


def sample_engines(
    interval: float = 1.0,
    processes: Callable[[], Iterable[Any]] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[ProcessSample]:
    """Blocking: every engine-looking process with its CPU use over ``interval`` seconds (one pass over the
    process table, at most 64 processes sampled)."""
    listing = processes or (lambda: psutil.process_iter(["pid", "name", "cmdline"]))
    watched = list(_candidates(listing()))
    if not watched:
        return []
    sleep(interval)
    samples = []
    for proc in watched:
        try:
            cpu = float(proc.cpu_percent(None))
        except (psutil.Error, OSError):
            continue
        info = proc.info
        samples.append(ProcessSample(proc.pid, str(info.get("name") or ""), tuple(info.get("cmdline") or ()), cpu))
    return samples


def warn_if_busy_engines(own: set[int], samples: list[ProcessSample] | None = None) -> list[ProcessSample]:
    """Blocking: log a warning when another engine is busy on this machine (both would be slow); returns them."""
    busy = busy_engines(sample_engines() if samples is None else samples, own)
    if busy:
        listed = ", ".join(f"{s.name or '?'} (pid {s.pid}, {s.cpu_percent:.0f}% CPU)" for s in busy[:5])
        log.warning(
            "another LLM engine is busy on this machine: %s; engines sharing the cores slow each other down "
            "(set SHARED_OLLAMA_ENGINE_THREADS to split them)",
            listed,
        )
    return busy
