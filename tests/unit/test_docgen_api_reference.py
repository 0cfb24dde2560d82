"""The API reference renderer on small OpenAPI documents: grouping, order, fields, codes, repeated bodies."""

from __future__ import annotations

from typing import Any

from shared_ollama.docgen.api_reference import render

OPTIONS = {
    "title": "Options",
    "type": "object",
    "properties": {"temperature": {"anyOf": [{"type": "number", "minimum": 0.0, "maximum": 2.0}, {"type": "null"}]}},
}
CHAT = {
    "title": "ChatRequest",
    "type": "object",
    "additionalProperties": False,
    "required": ["messages"],
    "properties": {
        "model": {"type": "string", "default": "", "description": "A model | or an alias."},
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}, "maxItems": 10},
        "options": {"anyOf": [OPTIONS, {"type": "null"}]},
        "mode": {"type": "string", "enum": ["a", "b"]},
    },
}
VALIDATION = {"description": "Validation Error"}


def _document() -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": CHAT}}}
    return {
        "info": {"title": "Test"},
        "components": {
            "schemas": {
                "Message": {
                    "title": "Message",
                    "type": "object",
                    "required": ["role"],
                    "properties": {"role": {"type": "string", "minLength": 1}, "content": {"type": "string"}},
                }
            }
        },
        "paths": {
            "/z": {"post": {"tags": ["b"], "summary": "Z chat", "requestBody": body, "responses": {"200": {}}}},
            "/a": {
                "delete": {"tags": ["b"], "summary": "Delete ``a``", "responses": {"200": {"description": "Done"}}},
                "get": {
                    "tags": ["b", "a"],
                    "summary": "Get a",
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "default": 5}}],
                    "responses": {"200": {"description": "OK"}, "422": VALIDATION},
                },
                "post": {"tags": ["b"], "summary": "Post a", "requestBody": body, "responses": {"201": {}}},
            },
            "/raw": {"put": {"tags": ["a"], "summary": "Raw", "responses": {"200": {}}}},
        },
    }


def test_operations_are_grouped_by_sorted_tag_then_path_and_method() -> None:
    text = render(_document())
    headings = [line for line in text.splitlines() if line.startswith("## ") or line.startswith("### ")]
    assert headings == [
        "## Tags",
        "## a",
        "### GET /a",
        "### PUT /raw",
        "## b",
        "### GET /a",
        "### POST /a",
        "### DELETE /a",
        "### POST /z",
    ]
    assert "6 listings of 5 operations." in text


def test_a_body_lists_its_fields_with_types_defaults_bounds_and_nested_objects() -> None:
    text = render(_document())
    assert "Request body `application/json` (`ChatRequest`), required. Other fields are refused" in text
    assert '| `model` | string | `""` | A model \\| or an alias. |' in text
    assert "| `messages` | array of Message | required | items ≤ 10 |" in text
    assert "| `messages[].role` | string | required | length ≥ 1 |" in text
    assert "| `options` | Options \\| null | — |  |" in text
    assert "| `options.temperature` | number \\| null | — | ≥ 0; ≤ 2 |" in text
    assert '| `mode` | string | — | one of `"a"`, `"b"` |' in text


def test_a_body_seen_before_refers_to_its_first_listing() -> None:
    text = render(_document())
    assert text.count("| `messages[].role` |") == 1
    assert "the same fields as [`POST /a`](#post-a)." in text


def test_parameters_responses_and_undescribed_bodies() -> None:
    text = render(_document())
    assert "| `limit` | query | integer | `5` |  |" in text
    assert "Responses: `200` OK, `400` invalid request (a parameter failed validation)." in text
    assert "422" not in text.split("## Tags")[1]
    assert "Delete `a`" in text  # reStructuredText's double backticks become Markdown's
    raw = text.split("### PUT /raw")[1].split("##")[0]
    assert "Request body: not described by the schema." in raw
    delete = text.split("### DELETE /a")[1].split("###")[0]
    assert "Request body" not in delete


def test_the_output_is_deterministic() -> None:
    document = _document()
    shuffled = {**document, "paths": dict(reversed(list(document["paths"].items())))}
    assert render(shuffled) == render(document)
