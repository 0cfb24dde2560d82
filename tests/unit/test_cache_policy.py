"""The cache policy: which mode a request gets, from its determinism or an explicit header or body field."""

from __future__ import annotations

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.cache.policy import decide

# --- policy


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"temperature": 0}, "exact"),
        ({"temperature": 0.0, "top_p": 0.9}, "exact"),
        ({"seed": 42, "temperature": 0.8}, "exact"),
        ({"seed": 0}, "exact"),
        ({"seed": -1, "temperature": 0.8}, "off"),
        ({"temperature": 0.7}, "off"),
        ({}, "off"),
        (None, "off"),
    ],
)
def test_decide_by_determinism(options: dict | None, expected: str) -> None:
    request = {"model": "m", "prompt": "p"} if options is None else {"model": "m", "prompt": "p", "options": options}
    assert decide(request, None, None) == expected


def test_decide_explicit_mode_wins() -> None:
    hot = {"model": "m", "prompt": "p", "options": {"temperature": 0.9}}
    cold = {"model": "m", "prompt": "p", "options": {"temperature": 0}}
    assert decide(hot, "exact", None) == "exact"
    assert decide(hot, None, "semantic") == "semantic"
    assert decide(cold, "off", None) == "off"
    assert decide(cold, None, "off") == "off"
    assert decide(hot, " Semantic ", None) == "semantic"
    assert decide(hot, "exact", "off") == "exact"  # the header first
    assert decide(cold, "", None) == "exact"  # an empty header is no header
    for header, body in (("sometimes", None), (None, "yes"), (None, True)):
        with pytest.raises(InvalidRequest) as raised:
            decide(cold, header, body)  # type: ignore[arg-type]
        assert raised.value.param == "cache"
