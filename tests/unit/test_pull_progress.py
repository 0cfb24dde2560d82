"""Pull progress lines in Ollama's shape, and how often a growing layer reports."""

from __future__ import annotations

from shared_ollama.engine.pull.progress import Reporter, error, layer, short_digest, status

DIGEST = "sha256:" + "0123456789ab" + "f" * 52


def test_lines_have_ollamas_shape() -> None:
    assert status("pulling manifest") == {"status": "pulling manifest"}
    assert short_digest(DIGEST) == "0123456789ab"
    assert layer(DIGEST, 100) == {"status": "pulling 0123456789ab", "digest": DIGEST, "total": 100}
    assert layer(DIGEST, 100, 40) == {"status": "pulling 0123456789ab", "digest": DIGEST, "total": 100, "completed": 40}
    assert error("boom") == {"error": "boom"}


def test_a_layer_reports_its_first_count_about_every_hundredth_and_its_last() -> None:
    total = 1000 << 20
    reporter = Reporter(total)
    step = total // 100
    counts = [0, 1, step - 1, step, step + 5, 2 * step, total - 1, total, total]
    assert [c for c in counts if reporter.due(c)] == [0, step, 2 * step, total - 1, total]


def test_small_layers_report_at_least_every_mebibyte_and_a_restart_is_reported() -> None:
    reporter = Reporter(10 << 20)
    assert [c for c in (0, 512 << 10, 1 << 20, (1 << 20) + 1, 0, 10 << 20) if reporter.due(c)] == [
        0,
        1 << 20,
        0,
        10 << 20,
    ]
