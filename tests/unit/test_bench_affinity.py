"""The affinity benchmark's arithmetic: switches in start order, a tenant's share, the rows and their verdicts."""

from __future__ import annotations

import pytest
from bench.affinity import BASE, DERIVED, IN_FLIGHT, TENANTS, Run, _code, _rows, _switches


def _run(rps: float, waits: dict[str, list[float]], service: float = 1.0, slots: int = 2) -> Run:
    run = Run("x", slots=slots, wall=10.0)
    for tenant in TENANTS:
        result = run.tenants[tenant]
        result.queue_waits = waits.get(tenant, [0.0])
        result.latencies = [w + service for w in result.queue_waits]
    run.wall = run.completed / rps
    return run


def test_switches_count_model_changes_in_start_order_not_arrival_order() -> None:
    starts = [(3.0, BASE), (1.0, BASE), (2.0, DERIVED), (4.0, BASE), (5.0, BASE)]
    assert _switches(starts) == 2  # by start time: BASE, DERIVED, BASE, BASE, BASE


def test_the_share_is_the_wait_of_an_even_split_of_the_slots() -> None:
    run = _run(1.0, {}, service=0.5, slots=2)
    # each tenant holds slots/tenants = 0.5 slot and keeps IN_FLIGHT requests queued or running
    assert run.share() == pytest.approx((IN_FLIGHT * len(TENANTS) / 2 - 1) * 0.5)


def test_rows_say_met_or_missed_against_each_target() -> None:
    share = _run(1.0, {}).share()
    aware = _run(3.0, {"web": [share * 3.5], "batch": [share * 2]})
    rows = _rows(aware, _run(1.0, {}))
    assert rows[0][3].endswith("met") and rows[0][3].startswith("3.00x")
    by_measure = {row[0]: row[3] for row in rows}
    assert by_measure["affinity: web p95 queue wait (model-aware)"].endswith("missed")
    assert by_measure["affinity: batch p95 queue wait (model-aware)"].endswith("met")
    assert _rows(_run(1.5, {}), _run(1.0, {}))[0][3].endswith("missed")


def test_error_codes_are_read_from_every_surface_shape() -> None:
    assert _code(b'{"error": {"code": "backend_error"}}') == "backend_error"
    assert _code(b'{"error": "x", "code": "queue_full"}') == "queue_full"
    assert _code(b"not json") == ""
