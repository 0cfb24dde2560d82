"""Render every generated document in memory, and write them or check them (``scripts/dev/gen_docs.py``).

The app is built from defaults only (no environment, no tenants file, nothing started): its schema does not
depend on the machine or on whoever runs this.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared_ollama import settings as settings_module
from shared_ollama.docgen import api_reference, configuration
from shared_ollama.docgen.markdown import REGENERATE
from shared_ollama.settings import Settings

API_REFERENCE = Path("docs/API_REFERENCE.md")
CONFIGURATION = Path("docs/CONFIGURATION.md")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app built from default settings, without starting it."""
    from shared_ollama.app import create_app  # the whole app: imported only when a reference is rendered

    defaults = Settings.model_construct(tenants_file=Path(os.devnull), data_dir=Path(os.devnull), api_keys="")
    return create_app(defaults).openapi()


def api_reference_text() -> str:
    return api_reference.render(openapi_document())


def configuration_text() -> str:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return configuration.render(Settings.model_fields, inspect.getsource(settings_module), "Settings", prefix)


def documents() -> dict[Path, Callable[[], str]]:
    """Each generated document (relative to the repository's root) and what renders it."""
    return {API_REFERENCE: api_reference_text, CONFIGURATION: configuration_text}


def stale(root: Path) -> list[Path]:
    """The generated documents under ``root`` that differ from what the code renders now (or are missing)."""
    out = []
    for path, render in documents().items():
        target = root / path
        if not target.is_file() or target.read_text(encoding="utf-8") != render():
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or check) the generated documents in docs/.")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository's root (default: here)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a document is stale")
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.check:
        paths = stale(root)
        for path in paths:
            print(f"{path} is stale: run {REGENERATE}", file=sys.stderr)
        return 1 if paths else 0
    for path, render in documents().items():
        target = root / path
        text = render()
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            print(f"{path}: up to date")
            continue
        target.write_text(text, encoding="utf-8")
        print(f"{path}: written")
    return 0
