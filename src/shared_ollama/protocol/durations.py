"""Ollama's keep_alive semantics: a number is seconds, a string is a Go-style duration, negative = forever."""

from __future__ import annotations

import re

FOREVER_SECONDS = 100 * 365 * 86400.0
"""A keep_alive this long or longer is forever (as a negative one is): later times than that are not dates."""
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str) -> float:
    """``"1h30m"``, ``"300ms"``, ``"-1m"``, ``"10"`` (seconds) -> seconds. Raises ValueError."""
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[0] in "+-" else text
    if _NUMBER.fullmatch(body):  # a bare number: seconds (Ollama's environment variables accept these too)
        return sign * float(body)
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body) or pos == 0:
        raise ValueError(f"invalid duration {value!r}")
    return sign * total


def keep_alive_seconds(value: str | int | float | None, default: str) -> float | None:
    """Seconds to keep a model loaded after a request; ``None`` means forever, ``0`` means unload now."""
    if value is None or value == "":
        value = default
    seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
    if seconds != seconds:  # NaN
        raise ValueError("keep_alive is not a number")
    return None if seconds < 0 or seconds >= FOREVER_SECONDS else seconds
