"""JSON schemas (OpenAPI 3.1) as rows of a fields table: dotted name, type, default or "required", notes.

Object fields are listed one level into nested objects and array items (``options.temperature``,
``messages[].role``); deeper shapes are named by their titles in the type column.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared_ollama.docgen.markdown import cell, code, number

Schema = Mapping[str, Any]

MAX_DEPTH = 2
"""Levels of field names listed: ``options`` and ``options.temperature``, not ``options.x.y``."""


@dataclass(frozen=True)
class FieldRow:
    name: str
    kind: str
    default: str
    notes: str

    def cells(self) -> tuple[str, str, str, str]:
        return (code(self.name), cell(self.kind), self.default, self.notes)


def resolve(schema: Schema, components: Mapping[str, Any]) -> Schema:
    """``schema`` itself, or what its ``$ref`` (``#/components/schemas/<name>``) points at."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        target = components.get(ref.removeprefix("#/components/schemas/"), {})
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branches(schema: Schema) -> list[Schema]:
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return list(schema[key])
    return [schema]


def kind(schema: Schema, components: Mapping[str, Any]) -> str:
    """A short type: ``string``, ``integer | null``, ``array of Message``, ``"text"`` for a constant."""
    schema = resolve(schema, components)
    branches = _branches(schema)
    if len(branches) > 1:
        names: list[str] = []
        for branch in branches:
            name = kind(branch, components)
            if name not in names:
                names.append(name)
        return " | ".join(names)
    if "const" in schema:
        return json.dumps(schema["const"])
    types = schema.get("type")
    if isinstance(types, list):
        return " | ".join(str(t) for t in types)
    if types == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping) or not items:
            return "array"
        inner = kind(items, components)
        return f"array of ({inner})" if " | " in inner else f"array of {inner}"
    if types == "object" or "properties" in schema:
        title = schema.get("title")
        return str(title) if schema.get("properties") and title else "object"
    if isinstance(types, str):
        return types
    return "any"


def _bounds(schema: Schema) -> list[str]:
    notes: list[str] = []
    for key, text in (
        ("minimum", "≥ {}"),
        ("exclusiveMinimum", "> {}"),
        ("maximum", "≤ {}"),
        ("exclusiveMaximum", "< {}"),
        ("minLength", "length ≥ {}"),
        ("maxLength", "length ≤ {}"),
        ("minItems", "items ≥ {}"),
        ("maxItems", "items ≤ {}"),
    ):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            notes.append(text.format(number(value)))
    if isinstance(schema.get("pattern"), str):
        notes.append("pattern " + code(schema["pattern"]))
    if isinstance(schema.get("enum"), list):
        notes.append("one of " + ", ".join(code(json.dumps(v)) for v in schema["enum"]))
    return notes


def constraints(schema: Schema, components: Mapping[str, Any]) -> list[str]:
    """Bounds, patterns and enumerations of a schema and of its alternatives (``null`` aside)."""
    schema = resolve(schema, components)
    notes = _bounds(schema)
    branches = _branches(schema)
    if len(branches) > 1:
        for branch in branches:
            for note in _bounds(resolve(branch, components)):
                if note not in notes:
                    notes.append(note)
    return notes


def _nested_object(schema: Schema, components: Mapping[str, Any]) -> tuple[str, Schema] | None:
    """The one object with properties a field holds (directly, as ``X | null``, or as array items), and the
    suffix its fields' names get (``.`` or ``[].``)."""
    schema = resolve(schema, components)
    candidates = [resolve(b, components) for b in _branches(schema) if resolve(b, components).get("type") != "null"]
    if len(candidates) != 1:
        return None
    only = candidates[0]
    if only.get("type") == "array" and isinstance(only.get("items"), Mapping):
        items = resolve(only["items"], components)
        if len(_branches(items)) == 1 and items.get("properties"):
            return "[].", items
        return None
    if only.get("properties"):
        return ".", only
    return None


def _default(schema: Schema, required: bool) -> str:
    if required:
        return "required"
    if "default" in schema:
        return code(json.dumps(schema["default"], ensure_ascii=False))
    return "—"


def field_rows(
    schema: Schema,
    components: Mapping[str, Any],
    *,
    where: str = "",
    seen: dict[str, str] | None = None,
    prefix: str = "",
    depth: int = 1,
) -> Iterator[FieldRow]:
    """One row per property of an object schema, a nested object's properties after its own row.

    A nested object already listed elsewhere in the document (``seen``: its schema's JSON -> where it was listed)
    is referred to instead of listed again; ``where`` names the current listing (a Markdown link)."""
    schema = resolve(schema, components)
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    for name, raw in properties.items():
        sub = resolve(raw, components)
        notes = constraints(sub, components)
        description = sub.get("description")
        if isinstance(description, str) and description.strip():
            notes.append(cell(description))
        full = prefix + name
        nested = _nested_object(sub, components) if depth < MAX_DEPTH else None
        earlier = None
        if nested is not None and seen is not None:
            fingerprint = json.dumps(nested[1], sort_keys=True)
            earlier = seen.get(fingerprint)
            if earlier is None and where:
                seen[fingerprint] = f"{code(full)} of {where}"
        if earlier is not None:
            notes.append(f"fields as {earlier}")
        yield FieldRow(full, kind(sub, components), _default(sub, name in required), "; ".join(notes))
        if nested is not None and earlier is None:
            suffix, inner = nested
            yield from field_rows(inner, components, where=where, seen=seen, prefix=full + suffix, depth=depth + 1)
