"""What the CLI prints: human sizes and times, tables with headers, answers side by side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared_ollama.cli_render import (
    human_size,
    loaded_table,
    models_table,
    parse_time,
    processor,
    relative_time,
    side_by_side,
    table,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.00 kB"),
        (91_000_000, "91.0 MB"),
        (105_123_456, "105 MB"),
        (1_230_000_000, "1.23 GB"),
        (None, "-"),
        (-1, "-"),
        (True, "-"),
    ],
)
def test_sizes_are_human(size: object, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=-20), "just now"),
        (timedelta(seconds=20), "in less than a minute"),
        (timedelta(minutes=-1), "1 minute ago"),
        (timedelta(minutes=-3, seconds=-59), "3 minutes ago"),
        (timedelta(minutes=4, seconds=30), "in 4 minutes"),
        (timedelta(hours=-5), "5 hours ago"),
        (timedelta(days=-2), "2 days ago"),
        (timedelta(days=-65), "2 months ago"),
        (timedelta(days=-800), "2 years ago"),
        (timedelta(days=365 * 200), "forever"),
    ],
)
def test_times_are_relative(delta: timedelta, text: str) -> None:
    assert relative_time(NOW + delta, NOW) == text


def test_api_timestamps_parse_with_nanoseconds_or_not_at_all() -> None:
    assert parse_time("2026-05-01T11:57:00.123456789Z") == datetime(2026, 5, 1, 11, 57, 0, 123456, tzinfo=UTC)
    assert parse_time("2026-05-01T13:57:00+02:00") == datetime(2026, 5, 1, 11, 57, tzinfo=UTC)
    assert parse_time("yesterday") is None and parse_time(None) is None
    assert relative_time(None, NOW) == "-"


def test_a_table_has_headers_and_aligned_columns() -> None:
    assert table(("NAME", "SIZE"), [("a-long-name", "1 B"), ("b", "22 MB")]) == (
        "NAME          SIZE\na-long-name   1 B\nb             22 MB\n"
    )
    assert table(("NAME", "SIZE"), []) == "NAME   SIZE\n"


def test_models_ls_and_ps_tables() -> None:
    listed = [
        {
            "name": "smollm2:135m",
            "digest": "abcdef0123456789",
            "size": 105_123_456,
            "modified_at": "2026-05-01T09:00:00Z",
        },
        {"model": "odd:1"},
    ]
    lines = models_table(listed, NOW).splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert lines[1].split() == ["smollm2:135m", "abcdef012345", "105", "MB", "3", "hours", "ago"]
    assert lines[2].split() == ["odd:1", "-", "-", "-"]
    loaded = [
        {
            "name": "smollm2:135m",
            "digest": "sha256:ffff00001111",
            "size": 2_000_000_000,
            "size_vram": 0,
            "context_length": 4096,
            "expires_at": "2026-05-01T12:04:30.5Z",
        }
    ]
    lines = loaded_table(loaded, NOW).splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert lines[1].split() == [
        "smollm2:135m",
        "ffff00001111",
        "2.00",
        "GB",
        "100%",
        "CPU",
        "4096",
        "in",
        "4",
        "minutes",
    ]


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [(100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 70, "30%/70% CPU/GPU"), (None, 5, "100% CPU")],
)
def test_processor_is_said_as_ollama_says_it(size: object, vram: object, text: str) -> None:
    assert processor({"size": size, "size_vram": vram}) == text


def test_answers_are_printed_side_by_side_and_wrapped() -> None:
    text = side_by_side(
        ("brief", "smollm2:135m"), "Why is the sky blue?", ("Rayleigh scattering.", "The sky " * 8), width=50
    )
    lines = text.splitlines()
    assert lines[0] == "> Why is the sky blue?"
    assert lines[1] == f"{'brief'.ljust(23)} | smollm2:135m"
    assert lines[2].startswith("-" * 23 + " | ")
    assert lines[3] == f"{'Rayleigh scattering.'.ljust(23)} | The sky The sky The sky"
    assert all(line.startswith(" " * 23 + " | The sky") for line in lines[4:])
    assert sum(line.count("The sky") for line in lines) == 8
    assert all(len(line) <= 50 for line in lines)
