"""The configuration renderer on a small settings class: sections, docstrings, types, defaults, bounds."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from shared_ollama.docgen.configuration import render, source_fields, type_text

SOURCE = textwrap.dedent(
    '''
    class Demo(BaseSettings):
        """Not a field's docstring."""

        undocumented_first: int = 1

        # --- server
        host: str = "127.0.0.1"
        """Where to listen.

        Indented continuation | with a pipe."""
        # a plain comment is not a section
        level: Literal["info", "debug"] = "info"

        # --- limits (per tenant)
        max_body_bytes: int = Field(default=1_572_864, ge=1024)
        """Largest body."""
        timeout: float | None = Field(default=None, gt=0, le=60)
        """Seconds; unset: none."""
        data_dir: Path = Field(default_factory=_home)
        secret: str = Field(default="", alias="DEMO_SECRET")
    '''
)


def _home() -> Path:
    """``~/.demo``"""
    return Path("/nowhere")


class Demo(BaseSettings):
    undocumented_first: int = 1
    host: str = "127.0.0.1"
    level: Literal["info", "debug"] = "info"
    max_body_bytes: int = Field(default=1_572_864, ge=1024)
    timeout: float | None = Field(default=None, gt=0, le=60)
    data_dir: Path = Field(default_factory=_home)
    secret: str = Field(default="", alias="DEMO_SECRET")


def test_sections_and_docstrings_come_from_the_source() -> None:
    fields = source_fields(SOURCE, "Demo")
    assert fields["undocumented_first"].section == "general"
    assert fields["undocumented_first"].doc == ""
    assert (fields["host"].section, fields["level"].section) == ("server", "server")
    assert fields["host"].doc == "Where to listen.\n\nIndented continuation | with a pipe."
    assert fields["level"].doc == ""
    assert fields["timeout"].section == "limits (per tenant)"
    assert fields["timeout"].doc == "Seconds; unset: none."


def test_types_read_as_people_write_them() -> None:
    assert type_text(int) == "integer"
    assert type_text(float | None) == "number or unset"
    assert type_text(Path | None) == "path or unset"
    assert type_text(Literal["a", "b"]) == "one of `a`, `b`"


def test_rows_give_the_variable_type_default_bounds_and_meaning() -> None:
    text = render(Demo.model_fields, SOURCE, "Demo", "DEMO_")
    assert "## Sections\n\n7 settings." in text
    assert "- [Server](#server): 2" in text
    assert "- [Limits (per tenant)](#limits-per-tenant): 4" in text
    assert "| `DEMO_UNDOCUMENTED_FIRST` | integer | `1` |  |  |" in text
    assert "| `DEMO_HOST` | string | `127.0.0.1` |  | Where to listen. Indented continuation \\| with a pipe. |" in text
    assert "| `DEMO_LEVEL` | one of `info`, `debug` | `info` |  |  |" in text
    assert "| `DEMO_MAX_BODY_BYTES` | integer | `1572864` (1.5 MiB) | ≥ 1024 | Largest body. |" in text
    assert "| `DEMO_TIMEOUT` | number or unset | unset | > 0, ≤ 60 | Seconds; unset: none. |" in text
    assert "| `DEMO_DATA_DIR` | path | `~/.demo` |  |  |" in text  # the factory's docstring, not its value
    assert "| `DEMO_SECRET` | string | empty |  |  |" in text
    assert text.index("## General") < text.index("## Server") < text.index("## Limits (per tenant)")
