"""Tenants files and the limits a tenant gets from the settings, for the tenants tests."""

from __future__ import annotations

from pathlib import Path

from shared_ollama.service.admission.tenants import Limits
from shared_ollama.settings import Settings

PROJECT = "x-shared-ollama-project"


def write(tmp_path: Path, text: str, name: str = "tenants.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def defaults(settings: Settings) -> Limits:
    return Limits(
        max_inflight_text=settings.max_inflight_text,
        max_inflight_vision=settings.max_inflight_vision,
        max_prompt_tokens=settings.max_prompt_tokens,
        queue_timeout_text=settings.queue_timeout_text,
        queue_timeout_vision=settings.queue_timeout_vision,
    )
