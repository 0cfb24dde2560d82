"""Whether the tests run in CI, where a missing tool fails a test instead of skipping it."""

from __future__ import annotations

from collections.abc import Mapping

CI_VALUES = ("true", "1")
"""Values of ``CI`` that mean CI (any case): GitHub Actions, GitLab and most others set ``true``, some ``1``."""


def in_ci(env: Mapping[str, str]) -> bool:
    """True when ``env["CI"]`` is ``true`` or ``1`` (any case, surrounding blanks ignored)."""
    return env.get("CI", "").strip().lower() in CI_VALUES
