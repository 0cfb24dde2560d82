"""What importing the embedded engine costs: the registry client's aiohttp waits for the first pull."""

from __future__ import annotations

import subprocess
import sys


def test_the_engine_starts_without_the_registry_clients_http_library() -> None:
    code = "import sys, shared_ollama.engine.server; print('aiohttp' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False", "aiohttp is imported by the first registry pull, not at start-up"
