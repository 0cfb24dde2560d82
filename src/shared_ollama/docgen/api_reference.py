"""``docs/API_REFERENCE.md`` from the app's OpenAPI document: every operation grouped by tag, sorted, with its
summary, parameters, request body fields and response codes. The same schema gives the same text (no dates)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared_ollama.docgen.markdown import anchor, cell, code, header, number, prose, table
from shared_ollama.docgen.schema_fields import constraints, field_rows, kind, resolve

METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
"""Order of an endpoint's methods in the reference."""

VALIDATION_STATUS = "422"
"""FastAPI lists parameter validation as 422; the service answers ``400 invalid_request`` (api/errors.py)."""

_BODY_METHODS = {"post", "put", "patch"}

INTRO = """\
Every endpoint the gateway serves, from its OpenAPI document (live at `/api/openapi.json`, Swagger UI at
`/api/docs`), grouped by tag. An endpoint listed under several tags appears under each. Field support and
refusals per surface: [API_SURFACES.md](API_SURFACES.md); guides: [README.md](README.md).

**Errors every endpoint may answer** (bodies, `Retry-After` and request ids:
[TROUBLESHOOTING.md](TROUBLESHOOTING.md)): `400 invalid_request` (a bad body, field or parameter — named in the
message; FastAPI's generic 422 is never sent), `401 unauthorized` / `403 forbidden` (with keys configured),
`404 not_found`, `408 body_timeout`, `413 request_too_large`; on endpoints that reach the engine also
`429 tenant_busy` / `user_busy` / `rate_limited`, `503 queue_full` / `request_timeout` / `backend_unavailable`,
`502 backend_error`, and `404 model_not_found`. Every 429 and 503 carries `Retry-After`.
"""


def _operations(openapi: Mapping[str, Any]) -> dict[str, list[tuple[str, str, Mapping[str, Any]]]]:
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in openapi.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            for tag in operation.get("tags") or ["untagged"]:
                by_tag.setdefault(tag, []).append((path, method, operation))
    for operations in by_tag.values():
        operations.sort(key=lambda op: (op[0], METHODS.index(op[1])))
    return dict(sorted(by_tag.items()))


def _parameters(operation: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    rows = []
    for raw in operation.get("parameters") or ():
        param = resolve(raw, components)
        schema = resolve(param.get("schema") or {}, components)
        notes = constraints(schema, components)
        if isinstance(param.get("description"), str):
            notes.append(cell(param["description"]))
        default = (
            "required" if param.get("required") else code(json.dumps(schema["default"])) if "default" in schema else "—"
        )
        rows.append(
            (
                code(str(param.get("name"))),
                str(param.get("in")),
                cell(kind(schema, components)),
                default,
                "; ".join(notes),
            )
        )
    if not rows:
        return ""
    return "Parameters:\n\n" + table(("parameter", "in", "type", "default", "notes"), rows)


def _body(
    path: str, method: str, operation: Mapping[str, Any], components: Mapping[str, Any], seen: dict[str, str]
) -> str:
    body = operation.get("requestBody")
    if not isinstance(body, Mapping):
        return "Request body: not described by the schema.\n" if method in _BODY_METHODS else ""
    parts = []
    for media, content in sorted((body.get("content") or {}).items()):
        schema = resolve(content.get("schema") or {}, components)
        title = schema.get("title")
        name = f" ({code(str(title))})" if title else ""
        required = "required" if body.get("required") else "optional"
        fingerprint = json.dumps(schema, sort_keys=True)
        first = seen.get(fingerprint)
        if first is not None:
            parts.append(f"Request body `{media}`{name}, {required}: the same fields as {first}.\n")
            continue
        here = f"[`{_heading(path, method)}`](#{anchor(_heading(path, method))})"
        seen[fingerprint] = here
        text = f"Request body `{media}`{name}, {required}."
        if isinstance(schema.get("description"), str):
            text += " " + prose(" ".join(schema["description"].split()))
        if schema.get("additionalProperties") is False:
            text += " Other fields are refused (400, naming the field)."
        text += "\n"
        rows = [row.cells() for row in field_rows(schema, components, where=here, seen=seen)]
        if rows:
            text += "\n" + table(("field", "type", "default", "notes"), rows)
        else:
            text += f"\nType: {cell(kind(schema, components))}.\n"
        parts.append(text)
    return "\n".join(parts)


def _heading(path: str, method: str) -> str:
    return f"{method.upper()} {path}"


def _responses(operation: Mapping[str, Any]) -> str:
    items = []
    for status, response in sorted((operation.get("responses") or {}).items()):
        if status == VALIDATION_STATUS:
            items.append("`400` invalid request (a parameter failed validation)")
            continue
        description = response.get("description") if isinstance(response, Mapping) else None
        items.append(f"`{status}` {cell(str(description))}" if description else f"`{status}`")
    return "Responses: " + ", ".join(items) + ".\n" if items else ""


def _operation(
    path: str, method: str, operation: Mapping[str, Any], components: Mapping[str, Any], seen: dict[str, str]
) -> str:
    parts = [f"### {_heading(path, method)}\n"]
    if operation.get("summary"):
        parts.append(prose(str(operation["summary"])) + "\n")
    if isinstance(operation.get("description"), str) and operation["description"].strip():
        parts.append(prose(" ".join(operation["description"].split())) + "\n")
    sections = (
        _parameters(operation, components),
        _body(path, method, operation, components, seen),
        _responses(operation),
    )
    for section in sections:
        if section:
            parts.append(section)
    return "\n".join(parts)


def render(openapi: Mapping[str, Any]) -> str:
    """The whole reference for one OpenAPI document."""
    components = (openapi.get("components") or {}).get("schemas") or {}
    by_tag = _operations(openapi)
    title = (openapi.get("info") or {}).get("title", "API")
    out = [header("API reference", f"the OpenAPI schema of `create_app` ({title})"), INTRO]
    count = sum(len(ops) for ops in by_tag.values())
    out.append(f"## Tags\n\n{count} listings of {_unique(by_tag)} operations.\n")
    out.append("".join(f"- [{tag}](#{anchor(tag)}): {len(ops)}\n" for tag, ops in by_tag.items()))
    seen: dict[str, str] = {}
    for tag, operations in by_tag.items():
        out.append(f"## {tag}\n")
        out.append("\n".join(_operation(path, method, op, components, seen) for path, method, op in operations))
    return "\n".join(out).rstrip("\n") + "\n"


def _unique(by_tag: Mapping[str, list[tuple[str, str, Mapping[str, Any]]]]) -> str:
    return number(len({(path, method) for ops in by_tag.values() for path, method, _ in ops}))
