"""The ``current_time`` tool: the date, time and weekday now in an IANA time zone, from an injectable clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared_ollama.service.agents.tooling import ToolOutcome, ToolSpec

Clock = Callable[[], datetime]
"""Returns the current time, time-zone aware."""

SPEC = ToolSpec(
    name="current_time",
    description=(
        "Get the current date, time and weekday. Optional timezone: an IANA name such as 'Europe/Paris' or "
        "'America/New_York' (default UTC)."
    ),
    parameters={
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone name, e.g. 'Asia/Tokyo'; default 'UTC'.",
                "minLength": 1,
                "maxLength": 64,
            }
        },
        "additionalProperties": False,
    },
)


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
"""English names, whatever the process's locale."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def current_time(arguments: dict[str, Any], clock: Clock) -> ToolOutcome:
    name = str(arguments.get("timezone") or "UTC").strip()
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ToolOutcome(
            f"current_time: unknown time zone '{name}'; use an IANA name such as 'Europe/London'", error=True
        )
    now = clock().astimezone(zone)
    return ToolOutcome(f"{now.isoformat(timespec='seconds')} ({WEEKDAYS[now.weekday()]}, {name})")
