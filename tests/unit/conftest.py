"""Fixtures for the unit tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.service.observability.analytics import AnalyticsStore


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SHARED_OLLAMA_* variable from the caller, and no ./config/tenants.yaml: only what each test sets.

    Used by the tenants and settings-masking tests (``pytest.mark.usefixtures("isolated_env")``).
    """
    for name in list(os.environ):
        if name.startswith("SHARED_OLLAMA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start analytics stores on ``tmp_path/a/b/analytics.sqlite3`` (by default); close them all at teardown."""
    stores: list[AnalyticsStore] = []

    async def make(path: Path | None = None, **kw: Any) -> AnalyticsStore:
        store = AnalyticsStore(path or tmp_path / "a" / "b" / "analytics.sqlite3", **kw)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
