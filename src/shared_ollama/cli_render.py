"""What the CLI prints: tables with headers, human sizes and times, answers side by side, and a progress line
for a step that reports nothing until it ends. Pure except ``while_waiting`` (a thread and a bar)."""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
JsonDict = dict[str, Any]
_FRACTION = re.compile(r"(\.\d{6})\d+")
_FOREVER_DAYS = 365 * 100


def human_size(size: object) -> str:
    """Bytes in decimal units as Ollama prints them: ``270 B``, ``91.0 MB``, ``1.23 GB``; ``-`` when unknown."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "-"
    if size < 1000:
        return f"{size} B"
    from tqdm import tqdm

    text = tqdm.format_sizeof(size, "B", 1000)
    return f"{text[:-2]} {text[-2:]}"


def parse_time(text: object) -> datetime | None:
    """An API timestamp (RFC 3339, nanoseconds allowed) as an aware datetime; None when it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def relative_time(when: datetime | None, now: datetime) -> str:
    """``3 minutes ago``, ``in 4 minutes``, ``forever`` (a century or more away), ``-`` when unknown."""
    if when is None:
        return "-"
    seconds = (when - now).total_seconds()
    if seconds > _FOREVER_DAYS * 86400:
        return "forever"
    amount = abs(seconds)
    units = (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60))
    unit, length = next(((u, n) for u, n in units if amount >= n), ("", 0))
    if not length:
        return "just now" if seconds <= 0 else "in less than a minute"
    count = int(amount // length)
    text = f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{text} ago" if seconds <= 0 else f"in {text}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, three spaces apart, headers first; every line ends with a newline."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)


def _id(model: JsonDict) -> str:
    return str(model.get("digest") or "").removeprefix("sha256:")[:12] or "-"


def models_table(models: Sequence[JsonDict], now: datetime) -> str:
    """``models ls``: NAME, ID, SIZE, MODIFIED."""
    rows = [
        (
            m.get("name") or m.get("model"),
            _id(m),
            human_size(m.get("size")),
            relative_time(parse_time(m.get("modified_at")), now),
        )
        for m in models
    ]
    return table(("NAME", "ID", "SIZE", "MODIFIED"), rows)


def processor(model: JsonDict) -> str:
    """Where a loaded model is, as ``ollama ps`` says it: ``100% CPU``, ``100% GPU`` or ``30%/70% CPU/GPU``."""
    size, vram = model.get("size"), model.get("size_vram") or 0
    if not isinstance(size, int) or size <= 0 or not isinstance(vram, int) or vram <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def loaded_table(models: Sequence[JsonDict], now: datetime) -> str:
    """``models ps``: NAME, ID, SIZE, PROCESSOR, CONTEXT, UNTIL."""
    rows = [
        (
            m.get("name") or m.get("model"),
            _id(m),
            human_size(m.get("size")),
            processor(m),
            m.get("context_length") or "-",
            relative_time(parse_time(m.get("expires_at")), now),
        )
        for m in models
    ]
    return table(("NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"), rows)


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for paragraph in text.strip().splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width, replace_whitespace=False, drop_whitespace=True) or [""]
    return lines


def side_by_side(titles: tuple[str, str], prompt: str, answers: tuple[str, str], width: int) -> str:
    """One prompt and two answers in two columns of ``width`` characters in all, each answer wrapped."""
    column = max(20, (width - 3) // 2)
    left, right = (_wrap(a, column) for a in answers)
    out = [f"> {line}" for line in _wrap(prompt, width - 2)]
    out.append(f"{titles[0][:column].ljust(column)} | {titles[1][:column]}")
    out.append(f"{'-' * column} | {'-' * min(column, max(len(titles[1]), 1))}")
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        out.append(f"{a.ljust(column)} | {b}".rstrip())
    return "\n".join(out) + "\n"


def while_waiting(what: str, work: Callable[[], T], out: TextIO) -> T:
    """Run ``work`` (one blocking request, bounded by its own timeout) while a line on ``out`` shows how long it
    has taken. The work runs in a daemon thread: Ctrl-C leaves at once, and the request's connection closes
    with the process."""
    from tqdm import tqdm

    result: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="cli-work", daemon=True).start()
    with tqdm(desc=what, bar_format="{desc} ({elapsed})", file=out) as bar:
        while not done.wait(0.5):  # ends when the work does; the work's own timeout bounds it
            bar.refresh()
    if failure:
        raise failure[0]
    return result[0]
