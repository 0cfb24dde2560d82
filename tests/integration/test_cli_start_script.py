"""``scripts/core/start.sh``'s own steps, sourced in bash: the URL ``serve`` will answer on, "ready on <url>" only
once the service answers its health check (nothing listening: "not ready"; the server gone: silence), and the
CLI put on PATH (a link in ~/.local/bin when that is on PATH, nothing written elsewhere; else how to). The script
runs in an environment made from scratch (a temporary HOME, a fixed PATH, no SHARED_OLLAMA_* of this process): it
never reads or writes the developer's."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import ServedGateway
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "scripts" / "core" / "start.sh"
CLI = ROOT / ".venv" / "bin" / "shared-ollama"
Start = Callable[..., ServedGateway]
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def bash(call: str, *args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``call "$@"`` with start.sh sourced, in ``home`` as HOME and working directory, with only ``env`` added."""
    script = f'source "{START}"; {call} "$@"'
    return subprocess.run(
        ["bash", "-c", script, "start.sh", *args],
        cwd=home,
        env={"HOME": str(home), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_script_sees_a_made_up_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_PORT", "9999")
    monkeypatch.setenv("HOME", str(tmp_path / "the-developers-home"))
    seen = bash("env", home=tmp_path)
    names = dict(line.split("=", 1) for line in seen.stdout.splitlines() if "=" in line)
    assert (names["HOME"], names["PATH"]) == (str(tmp_path), SYSTEM_PATH)
    assert not [name for name in names if name.startswith("SHARED_OLLAMA_")]
    assert bash("serve_url", home=tmp_path).stdout == "http://127.0.0.1:8000\n"


@pytest.mark.parametrize(
    ("args", "env", "url"),
    [
        ((), {}, "http://127.0.0.1:8000"),
        (("--port", "9001"), {"SHARED_OLLAMA_HOST": "10.0.0.2"}, "http://10.0.0.2:9001"),
        (("--host=0.0.0.0", "--port=9002"), {"SHARED_OLLAMA_PORT": "1"}, "http://127.0.0.1:9002"),
        (("--host", "::"), {"SHARED_OLLAMA_PORT": "9003"}, "http://[::1]:9003"),
        (("--host", "fd00::1", "--port"), {}, "http://[fd00::1]:8000"),
    ],
)
def test_the_url_serve_answers_on(args: tuple[str, ...], env: dict[str, str], url: str, tmp_path: Path) -> None:
    done = bash("serve_url", *args, home=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (0, url + "\n"), done.stderr


def test_ready_is_said_only_once_the_service_answers(serve_gateway: Start, tmp_path: Path) -> None:
    me = str(os.getpid())  # a process that stays alive while the script waits
    nothing = f"http://127.0.0.1:{free_port()}"
    waited = bash("announce_ready", nothing, me, home=tmp_path, env={"READY_WAIT_SECONDS": "1"})
    assert waited.returncode == 0 and "ready on" not in waited.stderr.replace("not ready on", "")
    assert f"not ready on {nothing} after 1 s" in waited.stderr

    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    silent = bash("announce_ready", nothing, str(dead.pid), home=tmp_path, env={"READY_WAIT_SECONDS": "30"})
    assert (silent.returncode, silent.stderr) == (0, ""), "the server is gone: nothing to say"

    gw = serve_gateway()
    ready = bash("announce_ready", gw.url, me, home=tmp_path)
    lines = ready.stderr.splitlines()
    assert lines[0] == f"[shared-ollama] ready on {gw.url}"
    assert 'shared-ollama chat smollm2:135m "Why is the sky blue?"' in lines[1]
    assert "ln -s" in ready.stderr, "then how to put the CLI on PATH"


def test_the_cli_is_linked_into_local_bin_only_when_that_is_on_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    system_path = "/usr/bin:/bin"

    hint = bash("offer_cli", home=home, env={"PATH": system_path})
    assert hint.returncode == 0 and f"ln -s {CLI} ~/.local/bin/" in hint.stderr
    assert list(local_bin.iterdir()) == [], "not on PATH: nothing written"

    on_path = {"PATH": f"{local_bin}:{system_path}"}
    linked = bash("offer_cli", home=home, env=on_path)
    assert linked.returncode == 0 and f"linked the CLI into {local_bin}" in linked.stderr
    assert (local_bin / "shared-ollama").resolve() == CLI.resolve()
    assert [p.name for p in home.rglob("*")] == [".local", "bin", "shared-ollama"]
    again = bash("offer_cli", home=home, env=on_path)
    assert "the CLI is on your PATH" in again.stderr

    (local_bin / "shared-ollama").unlink()
    (local_bin / "shared-ollama").write_text("#!/bin/sh\n")
    (local_bin / "shared-ollama").chmod(0o755)
    other = bash("offer_cli", home=home, env=on_path)
    assert "another shared-ollama comes first on your PATH" in other.stderr
    assert (local_bin / "shared-ollama").read_text() == "#!/bin/sh\n", "someone else's file is left alone"
