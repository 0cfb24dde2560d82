"""``shared-ollama modelfile new|check`` and the parts of ``tune`` that need no service: a Modelfile from a base, a
system prompt, parameters and example messages (read back to the same values), and clear refusals of bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.cli import main
from shared_ollama.cli_http import Service, UsageError
from shared_ollama.cli_tune import base_of, parse_messages, parse_parameters, read_prompts
from shared_ollama.protocol.modelfile import parse_modelfile


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_modelfile_from_a_base_a_system_prompt_parameters_and_messages(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text(
        json.dumps({"role": "user", "content": "2+2?"}) + "\n\n" + json.dumps({"role": "Assistant", "content": "4"})
    )
    code, out, _ = run(
        capsys,
        "modelfile", "new", "--from", "smollm2:135m", "--system", 'Be "terse".\nVery.',
        "--param", "temperature=0.1", "--param", "stop=<end>", "--param", "STOP=###", "--param", "num_ctx=2048",
        "--messages", str(examples), "--message", "user", "Capital of France?", "--message", "assistant", "Paris.",
    )  # fmt: skip
    assert code == 0
    parsed = parse_modelfile(out)
    assert parsed.from_ == "smollm2:135m" and parsed.system == 'Be "terse".\nVery.'
    assert parsed.parameters == {"temperature": 0.1, "stop": ["<end>", "###"], "num_ctx": 2048}
    assert parsed.messages == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    code, _, err = run(capsys, "modelfile", "new", "--from", "smollm2:135m", "-o", str(tmp_path / "Modelfile"))
    assert code == 0 and "wrote" in err
    assert parse_modelfile((tmp_path / "Modelfile").read_text()).from_ == "smollm2:135m"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--param", "tempreature=1"], "--param tempreature: unknown parameter 'tempreature'"),
        (["--param", "num_ctx=big"], "--param num_ctx: parameter 'num_ctx' must be an integer"),
        (["--param", "temperature"], "--param takes name=value"),
        (["--message", "robot", "hi"], "--message: role must be one of system, user, assistant, got 'robot'"),
        (["--messages", "absent.jsonl"], "cannot read absent.jsonl"),
    ],
)
def test_bad_input_is_refused_with_a_message_that_names_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "modelfile", "new", "--from", "smollm2:135m", *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_example_messages_come_as_a_json_array_or_json_lines() -> None:
    assert parse_messages('[{"role": "user", "content": "hi"}]', "f") == [{"role": "user", "content": "hi"}]
    with pytest.raises(UsageError, match="f: not JSON"):
        parse_messages("role: user", "f")
    with pytest.raises(UsageError, match='f: message 2: must be an object with "role" and "content"'):
        parse_messages('{"role": "user", "content": "hi"}\n{"role": "user"}', "f")
    assert parse_parameters(None) == {}


def test_check_reads_a_modelfile_back_or_names_the_bad_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "Modelfile"
    good.write_text('FROM smollm2:135m\nSYSTEM "x"\nPARAMETER temperature 0\nMESSAGE user hi\n')
    code, out, _ = run(capsys, "modelfile", "check", str(good))
    assert code == 0
    assert out == f"{good}: FROM smollm2:135m, 1 parameter(s), 1 message(s), a system prompt\n"
    bad = tmp_path / "Bad"
    bad.write_text("FROM smollm2:135m\n\nPARAMETER tempreature 0\n")
    code, _, err = run(capsys, "modelfile", "check", str(bad))
    assert code == 2 and "Modelfile line 3: unknown parameter 'tempreature'" in err
    code, _, err = run(capsys, "modelfile", "check", str(tmp_path / "absent"))
    assert code == 2 and "No such file" in err


def test_a_prompt_set_is_one_prompt_per_line() -> None:
    assert read_prompts("# greetings\nHi there\n\n  What is 2+2?  \n") == ["Hi there", "What is 2+2?"]
    with pytest.raises(UsageError, match="no prompts"):
        read_prompts("# only a comment\n\n")
    with pytest.raises(UsageError, match="at most 1000"):
        read_prompts("p\n" * 1001)


def test_try_refuses_a_temperature_since_it_compares_greedy_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hi\n")
    code, _, err = run(
        capsys,
        "tune",
        "try",
        "m",
        str(prompts),
        "--base",
        "b",
        "--option",
        "temperature=1",
        "--url",
        "http://127.0.0.1:9",
    )
    assert code == 2 and "temperature is always 0" in err
    code, _, err = run(capsys, "tune", "try", "m", str(tmp_path / "absent.txt"), "--url", "http://127.0.0.1:9")
    assert code == 2 and "cannot read" in err


def test_files_that_are_not_utf8_are_bad_input_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    latin1 = tmp_path / "latin1"
    latin1.write_bytes("FROM smollm2:135m\nSYSTEM été\n".encode("latin-1"))
    code, out, err = run(capsys, "modelfile", "check", str(latin1))
    assert (code, out) == (2, "")
    assert err == f"error: {latin1} is not UTF-8 text (at byte offset 25: invalid continuation byte)\n"
    code, _, err = run(capsys, "modelfile", "new", "--from", "smollm2:135m", "--messages", str(latin1))
    assert code == 2 and f"{latin1} is not UTF-8 text" in err
    unreachable = "http://127.0.0.1:9"  # the prompts are read before the service is asked anything
    code, _, err = run(capsys, "tune", "try", "m", str(latin1), "--base", "b", "--url", unreachable)
    assert code == 2 and f"{latin1} is not UTF-8 text" in err


@dataclass(frozen=True)
class Shows(Service):
    """Answers ``show`` with a parent model and records the paths asked."""

    asked: list[str] = field(default_factory=list)

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.asked.append(path)
        return {"details": {"parent_model": "smollm2:135m"}}


def test_the_base_is_looked_up_under_the_quoted_model_name() -> None:
    service = Shows("http://x")
    assert base_of(service, "team/brief model?v=2#1") == "smollm2:135m"
    assert service.asked == ["/api/v1/models/team/brief%20model%3Fv%3D2%231/show"]
