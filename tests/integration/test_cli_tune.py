"""``shared-ollama tune try`` against a served gateway (scripted engine): every prompt to the model and to its
base, greedy, all of one model's first, answers side by side or as JSON; the base asked for when the service
cannot tell it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shared_ollama.cli import main
from tests.integration.conftest import Engine, ServedGateway

Start = Callable[..., ServedGateway]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# a prompt set\nWhy is the sky blue?\n\nCapital of France?\n")
    return path


def test_try_asks_both_models_greedily_and_prints_the_answers_side_by_side(
    serve_gateway: Start, engine: Engine, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = serve_gateway()
    httpx.delete(f"{engine.url}/_fake/requests")
    code, out, err = run(
        capsys, "tune", "try", "tuned", str(prompts), "--base", "fake", "--num-predict", "3", "--width", "40",
        "--option", "seed=1", "--url", gw.url,
    )  # fmt: skip
    assert code == 0, err
    assert "4/4" in err, "a bar over the answers"
    assert out.splitlines() == [
        "> Why is the sky blue?",
        f"{'tuned'.ljust(20)} | fake",
        f"{'-' * 20} | ----",
        f"{'tok tok tok'.ljust(20)} | tok tok tok",
        "",
        "> Capital of France?",
        f"{'tuned'.ljust(20)} | fake",
        f"{'-' * 20} | ----",
        f"{'tok tok tok'.ljust(20)} | tok tok tok",
    ]
    chats = [
        r["body"] for r in httpx.get(f"{engine.url}/_fake/requests").json()["requests"] if r["path"] == "/api/chat"
    ]
    assert [c["model"] for c in chats] == ["tuned", "tuned", "fake", "fake"], "one model's answers, then the other's"
    assert [c["messages"][0]["content"] for c in chats] == ["Why is the sky blue?", "Capital of France?"] * 2
    for chat in chats:
        assert chat["stream"] is False
        assert chat["options"]["temperature"] == 0 and chat["options"]["num_predict"] == 3
        assert chat["options"]["seed"] == 1

    code, out, _ = run(capsys, "tune", "--url", gw.url, "try", "tuned", str(prompts), "--base", "fake", "--json")
    assert code == 0
    assert [p["prompt"] for p in json.loads(out)] == ["Why is the sky blue?", "Capital of France?"]
    assert set(json.loads(out)[0]["answers"]) == {"tuned", "fake"}


def test_try_asks_for_the_base_when_the_service_cannot_tell_it_and_reports_refusals(
    serve_gateway: Start, prompts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = serve_gateway()
    code, out, err = run(capsys, "tune", "try", "tuned", str(prompts), "--url", gw.url)
    assert (code, out) == (2, "") and "name it with --base" in err
    code, out, err = run(capsys, "tune", "try", "missing-tuned", str(prompts), "--base", "fake", "--url", gw.url)
    assert (code, out) == (1, "") and "error: 404:" in err and "missing-tuned" in err
