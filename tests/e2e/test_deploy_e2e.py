"""The container image's health check, run as Docker runs it, against the real service (gateway and engine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.e2e
DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "Dockerfile"


def _health_check_command() -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = re.search(r"^HEALTHCHECK .*?\bCMD (\[.*\])$", text, re.MULTILINE)
    assert found, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    command: list[str] = json.loads(found[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_image_health_check_passes_against_the_running_service(gateway_url: str) -> None:
    port = urlsplit(gateway_url).port
    env = {"PATH": os.environ.get("PATH", ""), "SHARED_OLLAMA_PORT": str(port)}
    done = subprocess.run(_health_check_command(), env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
