"""What importing the app costs: heavy optional libraries wait for their first use (start-up time)."""

from __future__ import annotations

import subprocess
import sys

DEFERRED = ("numpy", "PIL", "jsonschema", "sqlite_vec")
"""Imported by the semantic cache, the first image, the first tool call, the agents' document store."""


def test_importing_the_app_leaves_heavy_optional_libraries_for_later() -> None:
    code = f"import sys, shared_ollama.app; print(sorted(m for m in {DEFERRED!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
