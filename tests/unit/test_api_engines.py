"""What ``GET /api/v1/engines`` hides from a caller who may not see where the hosts run."""

from __future__ import annotations

from shared_ollama.api.engines import _hide_location


def test_the_url_goes_and_the_last_error_names_the_host_instead() -> None:
    entry = {
        "name": "gpu-1",
        "url": "http://u:***@10.0.0.5:11434",
        "last_error": "engine unreachable at http://10.0.0.5:11434: ClientConnectorError",
    }
    _hide_location(entry)
    assert "url" not in entry
    assert entry["last_error"] == "engine unreachable at the host ClientConnectorError"
    assert "10.0.0.5" not in str(entry)


def test_an_entry_without_an_error_keeps_the_rest() -> None:
    entry = {"name": "local", "url": None, "last_error": None, "state": "up"}
    _hide_location(entry)
    assert entry == {"name": "local", "last_error": None, "state": "up"}
