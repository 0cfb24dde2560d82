"""The fine-tuning helpers and ``chat`` end to end, as a user types them: ``shared-ollama tune create`` makes a
model from SmolLM2, a system prompt, a parameter and example messages through the real gateway and engine;
``tune try`` asks it and its base (found by the service) the same prompts side by side; ``chat`` streams an
answer from it. The service is found through SHARED_OLLAMA_URL. Small answers, greedy."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared_ollama.protocol.modelfile import parse_modelfile

pytestmark = pytest.mark.e2e
NAME = "brief-cli:e2e"
BASE = "smollm2:135m"


def cli(gateway: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared_ollama.cli", *args],
        env={**os.environ, "SHARED_OLLAMA_URL": gateway},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def made(gateway_url: str, tmp_path: Path) -> Iterator[Path]:
    modelfile = tmp_path / "Modelfile"
    created = cli(
        gateway_url, "tune", "create", NAME, "--from", BASE, "--system", "Answer in one word.",
        "--param", "num_ctx=1024", "--message", "user", "Capital of France?", "--message", "assistant", "Paris.",
        "-o", str(modelfile),
    )  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        assert created.stdout == f"created {NAME}\n" and f"creating {NAME}" in created.stderr
        yield modelfile
    finally:
        httpx.delete(f"{gateway_url}/api/v1/models/{NAME}", timeout=60)


def test_a_model_made_with_tune_create_is_tried_against_its_base_and_chatted_with(
    gateway_url: str, made: Path, tmp_path: Path
) -> None:
    written = parse_modelfile(made.read_text())
    shown = httpx.get(f"{gateway_url}/api/v1/models/{NAME}/show", timeout=60).json()
    assert shown["system"] == written.system == "Answer in one word."
    assert (
        shown["messages"]
        == written.messages
        == [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    )
    assert shown["details"]["parent_model"] == BASE

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Capital of Italy?\n")
    tried = cli(gateway_url, "tune", "try", NAME, str(prompts), "--num-predict", "8", "--width", "80")
    assert tried.returncode == 0, tried.stderr
    lines = tried.stdout.splitlines()
    assert lines[:2] == ["> Capital of Italy?", f"{NAME.ljust(38)} | {BASE}"]
    answers = [line.split(" | ", 1) for line in lines[3:]]
    assert answers and answers[0][0].strip() and answers[0][1].strip(), tried.stdout

    chatted = cli(
        gateway_url, "chat", NAME, "Capital of Spain?", "--option", "num_predict=8", "--option", "temperature=0"
    )
    assert chatted.returncode == 0, chatted.stderr
    assert chatted.stdout.strip() and chatted.stderr == ""
