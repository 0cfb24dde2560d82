"""What a loaded model takes, measured: the engine process's resident memory growth across the model's load, and
the GPU memory llama.cpp's devices lost meanwhile (``/api/ps``'s ``size`` and ``size_vram``).

llama.cpp maps the weights with their pages populated, allocates the KV cache and compute buffers and clears them,
so by the end of a load the model's memory is resident; what grows during the load is the model's. Loads are
measured one at a time (a meter per engine, its lock held around each load) after the memory of models being
unloaded has been given back. A growth smaller than half the model's files is not believable (memory freed
meanwhile): no measurement then, and ``/api/ps`` says its figure is an estimate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_GPU_KINDS = ("GGML_BACKEND_DEVICE_TYPE_GPU", "GGML_BACKEND_DEVICE_TYPE_IGPU")


@dataclass(frozen=True)
class Footprint:
    """Bytes a model took at load: resident memory (RAM) and GPU memory."""

    ram: int
    vram: int = 0

    @property
    def total(self) -> int:
        return self.ram + self.vram


def process_rss() -> int:
    """The engine process's resident set size in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def gpu_free(devices: Iterable[dict[str, Any]] | None = None) -> int:
    """Free memory of llama.cpp's GPU devices in bytes (0 without one); ``devices`` as ``get_device_info()``."""
    if devices is None:
        import xllamacpp

        devices = xllamacpp.get_device_info()
    total = 0
    for device in devices:
        kind = getattr(device.get("type"), "name", device.get("type"))
        if kind in _GPU_KINDS:
            total += int(device.get("memory_free") or 0)
    return total


def believable(growth: Footprint, file_bytes: int) -> bool:
    """Whether a measured growth can be the model's: at least half its files (weights are mapped populated)."""
    return growth.total >= file_bytes // 2


class LoadMeter:
    """Measures loads one at a time (thread-safe); ``rss`` and ``vram_free`` are the probes (fakes in tests)."""

    def __init__(self, rss: Callable[[], int] = process_rss, vram_free: Callable[[], int] = gpu_free) -> None:
        self._lock = threading.Lock()
        self._rss = rss
        self._vram_free = vram_free

    def measure(
        self, load: Callable[[], T], file_bytes: int, settle: Callable[[], None] = lambda: None
    ) -> tuple[T, Footprint | None]:
        """Blocking: ``settle()`` (wait for memory being freed), then ``load()``; its result and footprint (None
        when the growth is not believable or a probe failed)."""
        with self._lock:
            settle()
            try:
                ram, free = self._rss(), self._vram_free()
            except Exception:
                return load(), None
            result = load()
            try:
                growth = Footprint(max(0, self._rss() - ram), max(0, free - self._vram_free()))
            except Exception:
                return result, None
        return result, growth if believable(growth, file_bytes) else None
