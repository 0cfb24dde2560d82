"""``scripts/core/test.sh`` prints why tests were skipped, and ``lib.sh``'s toolchain step says why ``npm ci`` failed
and goes on (the suite runs; the TypeScript examples then skip with the reason, or fail in CI).

The shell runs in an environment made from scratch: a temporary HOME and ROOT, stand-ins for node, npm and go first
on a fixed PATH (so nothing is installed), nothing of this process's environment.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "scripts" / "core"


def test_every_pytest_run_of_the_test_script_reports_skip_reasons() -> None:
    text = (CORE / "test.sh").read_text(encoding="utf-8")
    runs = [line for line in text.splitlines() if re.search(r"-m pytest\b", line) and not line.lstrip().startswith("#")]
    assert len(runs) >= 3
    assert all(" -rs " in line for line in runs), runs


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


def test_a_failed_npm_ci_is_logged_with_its_reason_and_the_suite_goes_on(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("node", "go"):
        _stand_in(bin_dir, tool, "exit 0")
    _stand_in(bin_dir, "npm", 'echo "npm error network request to the registry failed" >&2; exit 1')
    root = tmp_path / "root"
    typescript = root / "examples" / "typescript"
    typescript.mkdir(parents=True)
    (typescript / "package-lock.json").write_text("{}\n", encoding="utf-8")
    script = f'set -euo pipefail; source "{CORE / "lib.sh"}"; ROOT="{root}"; ensure_example_toolchains; echo went-on'
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "went-on\n"), done.stderr
    assert f"npm ci failed in {typescript}" in done.stderr
    assert "npm error network request to the registry failed" in done.stderr, "the reason is logged"
    assert not (typescript / "node_modules" / ".installed").exists(), "not marked installed: tried again next run"
