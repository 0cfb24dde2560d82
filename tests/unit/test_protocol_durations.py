"""Ollama's keep_alive: numbers are seconds, strings are Go durations, negative is forever, 0 unloads."""

from __future__ import annotations

import pytest

from shared_ollama.protocol.durations import keep_alive_seconds, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        ("2h45m30.5s", 9930.5),
        (".5s", 0.5),
        ("1us", 1e-6),
        ("1µs", 1e-6),
        ("10ns", 1e-8),
        ("+2m", 120.0),
        ("-1m", -60.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("30", 30.0),
        (" 5m ", 300.0),
    ],
)
def test_go_durations_in_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", " ", "5x", "m", "5m3", "1h-2m", "--5m", "+-1s", "-", "nan", "inf", "1e3", ".s"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_numbers_are_seconds() -> None:
    assert keep_alive_seconds(30, "5m") == 30
    assert keep_alive_seconds(2.5, "5m") == 2.5


def test_missing_keep_alive_uses_the_default() -> None:
    assert keep_alive_seconds(None, "5m") == 300
    assert keep_alive_seconds("", "1h") == 3600
    assert keep_alive_seconds(None, "-1") is None


def test_negative_means_forever_and_zero_means_unload_now() -> None:
    assert keep_alive_seconds(-1, "5m") is None
    assert keep_alive_seconds("-5m", "5m") is None
    assert keep_alive_seconds(0, "5m") == 0
    assert keep_alive_seconds("0", "5m") == 0
    assert keep_alive_seconds("0s", "5m") == 0


def test_bad_strings_raise() -> None:
    with pytest.raises(ValueError):
        keep_alive_seconds("soon", "5m")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("300ms", 0.3), ("10", 10), ("-1", -1), ("-1m", -60), ("1.5s", 1.5), ("0", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m", "5m3", "1h-2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_keep_alive_semantics() -> None:
    assert keep_alive_seconds(None, "5m") == 300
    assert keep_alive_seconds(30, "5m") == 30
    assert keep_alive_seconds(-1, "5m") is None
    assert keep_alive_seconds("-5m", "5m") is None
    assert keep_alive_seconds(0, "5m") == 0
    assert keep_alive_seconds("0s", "5m") == 0


def test_a_keep_alive_beyond_any_date_is_forever_not_an_overflow() -> None:
    from datetime import UTC, datetime, timedelta

    assert keep_alive_seconds("100000000h", "5m") is None  # 11,000 years: /api/ps could not print its expiry
    assert keep_alive_seconds(10**12, "5m") is None
    long = keep_alive_seconds("8760h", "5m")  # a year is a date
    assert long == 8760 * 3600.0
    datetime.now(UTC) + timedelta(seconds=long)
