"""``tests/support/ci.py``: ``CI=true`` and ``CI=1`` in any case mean CI; anything else, or no ``CI``, does not."""

from __future__ import annotations

import pytest

from tests.support.ci import in_ci


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", " true "])
def test_true_and_1_in_any_case_mean_ci(value: str) -> None:
    assert in_ci({"CI": value})


@pytest.mark.parametrize(
    "env", [{}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}, {"CI": "no"}, {"GITHUB_ACTIONS": "true"}]
)
def test_anything_else_is_not_ci(env: dict[str, str]) -> None:
    assert not in_ci(env)
