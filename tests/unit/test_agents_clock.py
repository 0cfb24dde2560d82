"""The current_time tool: an injected clock, any IANA zone, an unknown zone named in a tool error."""

from __future__ import annotations

from datetime import UTC, datetime

from shared_ollama.service.agents.tools.clock import current_time


def fixed() -> datetime:
    return datetime(2024, 5, 1, 22, 30, 5, 123456, tzinfo=UTC)


def test_the_default_zone_is_utc_with_the_weekday() -> None:
    outcome = current_time({}, fixed)
    assert outcome.error is False
    assert outcome.content == "2024-05-01T22:30:05+00:00 (Wednesday, UTC)"


def test_a_zone_moves_the_time_and_the_weekday() -> None:
    assert current_time({"timezone": "Asia/Tokyo"}, fixed).content == "2024-05-02T07:30:05+09:00 (Thursday, Asia/Tokyo)"
    assert current_time({"timezone": "America/New_York"}, fixed).content == (
        "2024-05-01T18:30:05-04:00 (Wednesday, America/New_York)"
    )


def test_an_unknown_zone_is_a_tool_error_naming_it() -> None:
    for name in ("Mars/Olympus", "../../etc/passwd", "not a zone"):
        outcome = current_time({"timezone": name}, fixed)
        assert outcome.error is True
        assert f"unknown time zone '{name}'" in outcome.content
