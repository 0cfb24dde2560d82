"""``shared-ollama models ...`` with a scripted service: what each command asks, what it prints, and the progress
line of a step that reports nothing until it ends (create, load, unload)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.cli import build_parser
from shared_ollama.cli_http import Service, ServiceError
from shared_ollama.cli_models import run_models

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Recorded(Service):
    """Answers every request with ``answer`` (or raises it) and records (method, path, body)."""

    answer: JsonDict | ServiceError = field(default_factory=dict)
    calls: list[tuple[str, str, JsonDict | None]] = field(default_factory=list)

    def json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        self.calls.append((method, path, body))
        if isinstance(self.answer, ServiceError):
            raise self.answer
        return self.answer


def run(service: Service, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_models(build_parser().parse_args(["models", *argv]), service, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("argv", "call", "said"),
    [
        (("load", "smollm2:135m"), ("POST", "/api/v1/models/smollm2:135m/load", None), "loading smollm2:135m"),
        (("unload", "smollm2:135m"), ("POST", "/api/v1/models/smollm2:135m/unload", None), "unloading smollm2:135m"),
    ],
)
def test_load_and_unload_show_progress_while_the_service_works(
    argv: tuple[str, ...], call: tuple[str, str, None], said: str
) -> None:
    service = Recorded("http://x")
    code, out, err = run(service, *argv)
    assert (code, service.calls) == (0, [call])
    assert out == f"{argv[0]}ed {argv[1]}\n" and said in err


def test_create_sends_the_modelfile_with_a_progress_line(tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM smollm2:135m\nSYSTEM be brief\n")
    service = Recorded("http://x")
    code, out, err = run(service, "create", "brief", "-f", str(modelfile))
    assert code == 0 and out == "created brief\n" and "creating brief" in err
    assert service.calls == [
        ("POST", "/api/v1/models/create", {"name": "brief", "modelfile": "FROM smollm2:135m\nSYSTEM be brief\n"})
    ]


def test_a_refusal_is_printed_with_exit_code_1() -> None:
    code, out, err = run(Recorded("http://x", answer=ServiceError("403: admin only", 403)), "rm", "m")
    assert (code, out, err) == (1, "", "error: 403: admin only\n")


def test_a_modelfile_that_cannot_be_used_is_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    latin1 = tmp_path / "Modelfile"
    latin1.write_bytes("FROM smollm2:135m\nSYSTEM réponds en français\n".encode("latin-1"))
    service = Recorded("http://x")
    code, out, err = run(service, "create", "fr", "-f", str(latin1))
    assert (code, out, service.calls) == (2, "", [])
    assert err.startswith(f"error: {latin1} is not UTF-8 text (at byte offset 26: invalid continuation byte)")
    code, _, err = run(service, "create", "fr", "-f", str(tmp_path / "absent"))
    assert code == 2 and "cannot read" in err and "No such file" in err


def test_a_model_name_is_quoted_in_the_path() -> None:
    service = Recorded("http://x")
    assert run(service, "show", "team/my model#2:latest")[0] == 0
    assert service.calls == [("GET", "/api/v1/models/team/my%20model%232:latest/show", None)]
