"""docs/API_REFERENCE.md and docs/CONFIGURATION.md match what the code renders now (regenerated in memory)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from shared_ollama import settings as settings_module
from shared_ollama.docgen import generate
from shared_ollama.docgen.configuration import source_fields
from shared_ollama.docgen.markdown import REGENERATE
from shared_ollama.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[Path, str]:
    return {path: render() for path, render in generate.documents().items()}


@pytest.mark.parametrize("path", [generate.API_REFERENCE, generate.CONFIGURATION], ids=str)
def test_the_generated_document_is_current(path: Path, rendered: dict[Path, str]) -> None:
    target = ROOT / path
    assert target.is_file(), f"{path} is missing: run {REGENERATE}"
    assert target.read_text(encoding="utf-8") == rendered[path], f"{path} is stale: run {REGENERATE}"


def test_every_setting_has_a_docstring() -> None:
    described = source_fields(inspect.getsource(settings_module), "Settings")
    missing = [name for name in Settings.model_fields if not described.get(name) or not described[name].doc]
    assert not missing, f"settings without a docstring line in settings.py (docs/CONFIGURATION.md needs one): {missing}"


def test_the_documents_do_not_depend_on_the_environment_or_the_working_directory(
    rendered: dict[Path, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_PORT", "9999")
    monkeypatch.setenv("SHARED_OLLAMA_API_KEYS", "someone:some-key")
    monkeypatch.setenv("SHARED_OLLAMA_REDIS_URL", "redis://127.0.0.1:1/0")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "tenants.yaml").write_text("not: [a valid tenants file\n")
    monkeypatch.chdir(tmp_path)
    assert {path: render() for path, render in generate.documents().items()} == rendered


def test_check_reports_a_stale_document_and_writing_fixes_it(
    rendered: dict[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / generate.CONFIGURATION).write_text("# Configuration\n\nedited by hand\n")

    assert generate.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{generate.CONFIGURATION} is stale: run {REGENERATE}" in err
    assert f"{generate.API_REFERENCE} is stale" in err  # missing counts as stale

    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--root", str(tmp_path), "--check"]) == 0
    for path, text in rendered.items():
        assert (tmp_path / path).read_text(encoding="utf-8") == text
