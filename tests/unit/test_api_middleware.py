"""The bounded route template of requests no route matched."""

from __future__ import annotations

import pytest

from shared_ollama.api.middleware import unmatched_route


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/api/nope/123", "GET /api/nope/…"),
        ("POST", "/v1/embeddingz", "POST /v1/embeddingz"),
        ("GET", "/api/12345", "GET /api/*"),
        ("GET", "/api/" + "a" * 40, "GET /api/*"),
        ("DELETE", "/a/b/c/d/e", "DELETE /a/b/…"),
        ("GET", "/api/", "GET /api/"),
        ("GET", "/x%20y", "GET /*"),
        ("BREW", "/pot", "OTHER /pot"),
    ],
)
def test_unmatched_route_keeps_the_method_and_at_most_two_name_like_segments(
    method: str, path: str, route: str
) -> None:
    assert unmatched_route(method, path) == route
