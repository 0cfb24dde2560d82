"""The hand-written guides keep up with the code: every error code in TROUBLESHOOTING.md, every document in the
index, the limits of STABILITY_PLAN.md equal to the settings' defaults, the README's top."""

from __future__ import annotations

import re
from pathlib import Path

from shared_ollama import errors
from shared_ollama.docgen.configuration import default_text
from shared_ollama.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

NOT_IN_THE_HIERARCHY = {"client_closed": 499, "header_timeout": 408}
"""Answers made outside ``errors.py``: a client that left (``api/middleware.py``), a late request head
(``http_server.py``)."""


def _codes() -> dict[str, int]:
    found: dict[str, int] = {}
    pending: list[type[errors.SharedOllamaError]] = [errors.SharedOllamaError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls.status
        pending += cls.__subclasses__()
    return found | NOT_IN_THE_HIERARCHY


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def test_troubleshooting_has_a_row_for_every_error_code_with_its_status() -> None:
    table = _section((DOCS / "TROUBLESHOOTING.md").read_text(encoding="utf-8"), "## Codes")
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z_]+)` \| (\d{3})\b", table, re.MULTILINE)}
    codes = _codes()
    assert "queue_full" in codes and "tenant_busy" in codes  # the walk found the hierarchy
    missing = sorted(set(codes) - set(rows))
    assert not missing, f"docs/TROUBLESHOOTING.md has no row for: {missing}"
    wrong = {code: (rows[code], status) for code, status in codes.items() if rows[code] != str(status)}
    assert not wrong, f"docs/TROUBLESHOOTING.md gives the wrong status (doc, code) for: {wrong}"


def test_the_index_links_every_document_and_every_link_is_a_document() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([A-Z_]+\.md)\)", index))
    present = {path.name for path in DOCS.glob("*.md")} - {"README.md"}
    assert not present - linked, f"docs/README.md does not list: {sorted(present - linked)}"
    assert not linked - present, f"docs/README.md links documents that do not exist: {sorted(linked - present)}"


def test_the_limits_in_the_stability_plan_are_the_settings_defaults() -> None:
    table = _section((DOCS / "STABILITY_PLAN.md").read_text(encoding="utf-8"), "## Limits in force")
    rows = re.findall(r"^\| [^|\n]* \| `SHARED_OLLAMA_([A-Z0-9_]+)` \| ([^|\n]+?) \|", table, re.MULTILINE)
    assert len(rows) >= 20
    fields = Settings.model_fields
    unknown = [name for name, _ in rows if name.lower() not in fields]
    assert not unknown, f"docs/STABILITY_PLAN.md names settings that do not exist: {unknown}"
    wrong = {
        name: (shown, default_text(name.lower(), fields[name.lower()]))
        for name, shown in rows
        if shown != default_text(name.lower(), fields[name.lower()])
    }
    assert not wrong, f"docs/STABILITY_PLAN.md shows defaults (doc, code) that are not the settings': {wrong}"


def test_the_readme_starts_with_the_two_commands_then_the_guides() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    top, first_block, after = readme.split("```", 2)
    title, _, intro = top.strip().partition("\n")
    assert title.startswith("# ") and intro.strip(), "a title, then one sentence"
    assert "\n" not in intro.strip() and intro.strip().count(". ") == 0 and intro.strip().endswith("."), intro
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["./scripts/core/start.sh", "./scripts/core/test.sh"], "the two commands, nothing else"
    assert after.lstrip("\n").startswith("## Guides\n"), "the guides come right after the commands"
    guides = _section(readme, "## Guides")
    assert readme.index("\n## ") == readme.index("\n## Guides\n"), "the first section after the commands is Guides"
    assert "](docs/README.md)" in guides
    for guide in ("INTEGRATION_GUIDE", "CLIENT_GUIDE", "API_REFERENCE", "CONFIGURATION", "TROUBLESHOOTING"):
        assert f"](docs/{guide}.md)" in guides, guide
