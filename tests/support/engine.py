"""Model entries for the embedded engine's tests."""

from __future__ import annotations

from shared_ollama.engine.store import ModelEntry


def entry(**kwargs: object) -> ModelEntry:
    values: dict[str, object] = {"name": "m:latest", "digest": "sha256:00", "size": 1, "capabilities": ["completion"]}
    values.update(kwargs)
    return ModelEntry(**values)  # type: ignore[arg-type]
