"""The one function that decides a request's surface (and so its error format) from its path."""

from __future__ import annotations

import pytest

from shared_ollama.api.surfaces import surface_of


@pytest.mark.parametrize(
    ("path", "surface"),
    [
        ("/v1/chat/completions", "openai"),
        ("/v1", "openai"),
        ("/v1/models/a/b", "openai"),
        ("/v1/messages", "anthropic"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/v1/messages/nope", "anthropic"),
        ("/v1/messagesx", "openai"),
        ("/api/v1/chat/completions", "openai"),
        ("/api/v1/vlm/openai", "openai"),
        ("/api/v1/responses", "openai"),
        ("/api/v1/responses/resp_1", "openai"),
        ("/api/v1/responses/resp_1/input_items", "openai"),
        ("/api/v1/responsesx", "service"),
        ("/api/v1/chat", "service"),
        ("/api/v1/vlm", "service"),
        ("/api/v1/models/x/show", "service"),
        ("/api/chat", "ollama"),
        ("/api/tags", "ollama"),
        ("/api/nope", "ollama"),
        ("/", "operations"),
        ("/metrics", "operations"),
        ("/v1x", "operations"),
        ("/dashboard", "operations"),
    ],
)
def test_the_surface_follows_the_path(path: str, surface: str) -> None:
    assert surface_of(path) == surface
