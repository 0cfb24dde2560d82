"""Fixtures for the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SHARED_OLLAMA_* variable from the caller, and no ./config/tenants.yaml: only what each test sets.

    Used by the tenants and settings-masking tests (``pytest.mark.usefixtures("isolated_env")``).
    """
    for name in list(os.environ):
        if name.startswith("SHARED_OLLAMA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
