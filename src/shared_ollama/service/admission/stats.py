"""Small bounded statistics kept in memory: recent durations with their percentiles."""

from __future__ import annotations

from collections import deque


class RecentTimes:
    """The last ``size`` durations (seconds); percentiles over that window."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def __len__(self) -> int:
        return len(self._values)

    def percentile(self, pct: float, default: float = 0.0) -> float:
        if not self._values:
            return default
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
        return ordered[index]

    def median(self, default: float = 0.0) -> float:
        return self.percentile(50, default)
