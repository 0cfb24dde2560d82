"""``shared-ollama models pull``'s progress: a byte-counting bar per layer, status lines, errors."""

from __future__ import annotations

import io

import pytest

from shared_ollama.cli_models import ServiceError, show_pull

DIGEST = "sha256:" + "ab" * 32


def test_each_layer_gets_a_bar_that_ends_full_and_statuses_are_printed() -> None:
    out = io.StringIO()
    show_pull(
        [
            {"status": "pulling manifest"},
            {"status": "pulling abababababab", "digest": DIGEST, "total": 4 << 20},
            {"status": "pulling abababababab", "digest": DIGEST, "total": 4 << 20, "completed": 1 << 20},
            {"status": "pulling abababababab", "digest": DIGEST, "total": 4 << 20, "completed": 4 << 20},
            {"status": "verifying sha256 digest"},
            {"status": "success"},
        ],
        out,
    )
    text = out.getvalue()
    assert "pulling manifest" in text and "verifying sha256 digest" in text and "success" in text
    assert "pulling abababababab" in text and "100%" in text and "4.00M/4.00M" in text


def test_an_error_line_stops_with_its_message() -> None:
    with pytest.raises(ServiceError, match="digest mismatch"):
        show_pull([{"status": "pulling manifest"}, {"error": "digest mismatch for m.gguf"}], io.StringIO())
