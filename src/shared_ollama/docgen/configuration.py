"""``docs/CONFIGURATION.md`` from the settings object: every field with its environment variable, type, default
and attribute docstring, grouped by the ``# --- section`` comments of ``settings.py``.

The docstrings and section comments are read from the source (``ast`` for the statements, ``tokenize`` for the
comments); types, defaults and bounds come from the pydantic fields themselves.
"""

from __future__ import annotations

import ast
import inspect
import io
import tokenize
import types
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shared_ollama.docgen.markdown import anchor, cell, code, header, number, prose, table

SECTION_MARK = "# ---"
"""A comment starting with this opens a section of settings (``# --- engine selection and supervision``)."""

NO_SECTION = "general"

INTRO = """\
Every setting of the gateway and the embedded engine. Each is read from an environment variable (the prefix
`{prefix}` plus the name in capitals; booleans as `true`/`false`; unset means the default). Sections follow
`src/shared_ollama/settings.py`. `shared-ollama config show` prints the values in force (secrets masked).
Per-tenant overrides of the admission and policy settings live in the tenants file (docs/ADMISSION.md); per-model
ones in the models config (docs/MODELS.md).
"""


@dataclass(frozen=True)
class SourceField:
    name: str
    section: str
    doc: str


def source_fields(source: str, class_name: str) -> dict[str, SourceField]:
    """Each annotated attribute of ``class_name`` in ``source``: its section and its attribute docstring."""
    tree = ast.parse(source)
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)
    sections = sorted(
        (tok.start[0], tok.string.removeprefix(SECTION_MARK).strip())
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and tok.string.startswith(SECTION_MARK)
    )
    found: dict[str, SourceField] = {}
    body = cls.body
    for index, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        doc = ""
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            doc = inspect.cleandoc(following.value.value)
        section = NO_SECTION
        for line, title in sections:
            if line < node.lineno:
                section = title
        found[node.target.id] = SourceField(node.target.id, section, doc)
    return found


def type_text(annotation: Any) -> str:
    """A type as a setting's reader needs it: ``int``, ``float or unset``, ``one of `a`, `b```, ``path``."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(code(str(v)) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(type_text(a) for a in args)
        return f"{text} or unset" if len(args) < len(get_args(annotation)) else text
    if isinstance(annotation, type):
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, Enum):
            return "one of " + ", ".join(code(str(m.value)) for m in annotation)
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(info: FieldInfo) -> list[str]:
    notes = []
    for item in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, attr, None)
            if isinstance(value, int | float):
                notes.append(f"{sign} {number(value)}")
    return notes


def _size(value: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale and value % (scale // 4) == 0:
            return f" ({number(value / scale)} {unit})"
    return ""


def default_text(name: str, info: FieldInfo) -> str:
    """The default as it would be written in the environment; a computed one by its factory's docstring."""
    if info.default_factory is not None:
        doc = inspect.getdoc(info.default_factory)
        return cell(doc) if doc else "computed"
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, int | float):
        extra = _size(value) if isinstance(value, int) and name.endswith("bytes") else ""
        return code(number(value)) + extra
    if isinstance(value, Enum):
        return code(str(value.value))
    if value == "":
        return "empty"
    return code(str(value))


def env_name(name: str, info: FieldInfo, prefix: str) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return (alias or prefix + name).upper()


def render(fields: Mapping[str, FieldInfo], source: str, class_name: str, prefix: str) -> str:
    """The whole document for the settings class ``class_name`` (its pydantic fields and its source)."""
    described = source_fields(source, class_name)
    grouped: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for name, info in fields.items():
        origin = described.get(name, SourceField(name, NO_SECTION, ""))
        row = (
            code(env_name(name, info, prefix)),
            type_text(info.annotation),
            default_text(name, info),
            ", ".join(_bounds(info)),
            cell(origin.doc),
        )
        grouped.setdefault(origin.section, []).append(row)
    titles = {section: prose(section[:1].upper() + section[1:]) for section in grouped}
    out = [header("Configuration", "`Settings` in `src/shared_ollama/settings.py`"), INTRO.format(prefix=prefix)]
    out.append(
        f"## Sections\n\n{sum(len(rows) for rows in grouped.values())} settings.\n\n"
        + "".join(f"- [{titles[s]}](#{anchor(titles[s])}): {len(rows)}\n" for s, rows in grouped.items())
    )
    for section, rows in grouped.items():
        out.append(f"## {titles[section]}\n\n" + table(("variable", "type", "default", "allowed", "meaning"), rows))
    return "\n".join(out).rstrip("\n") + "\n"
