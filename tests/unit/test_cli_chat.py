"""``shared-ollama chat``'s logic with a scripted service: streaming to the output, Ctrl-C ending an answer, the
conversation loop (history, /clear, /bye, EOF, Ctrl-C at the prompt, an error dropping the turn), and where the
prompt comes from (the command line, piped stdin, else a conversation)."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared_ollama.cli_chat import conversation, run_chat, stream_answer
from shared_ollama.cli_http import Service, ServiceError

JsonDict = dict[str, Any]
Script = Callable[[JsonDict], Iterator[JsonDict]]


def words(*parts: str) -> Script:
    def answer(body: JsonDict) -> Iterator[JsonDict]:
        for part in parts:
            yield {"message": {"role": "assistant", "content": part}, "done": False}
        yield {"message": {"role": "assistant", "content": ""}, "done": True}

    return answer


def interrupted_after(*parts: str) -> Script:
    def answer(body: JsonDict) -> Iterator[JsonDict]:
        for part in parts:
            yield {"message": {"content": part}, "done": False}
        raise KeyboardInterrupt  # as Ctrl-C arrives while the next line is awaited

    return answer


def refused(body: JsonDict) -> Iterator[JsonDict]:
    raise ServiceError("404: model 'nope' not found", 404)
    yield {}


@dataclass(frozen=True)
class Scripted(Service):
    """A service whose answers are scripted, one per request; it records the bodies and whether each stream was
    closed."""

    answers: list[Script] = field(default_factory=list)
    bodies: list[JsonDict] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)

    def lines(self, path: str, body: JsonDict) -> Iterator[JsonDict]:
        assert path == "/api/v1/chat"
        self.bodies.append(body)
        index = len(self.closed)
        self.closed.append(False)
        try:
            yield from self.answers.pop(0)(body)
        finally:
            self.closed[index] = True


def typed(*lines: str | type[BaseException]) -> Callable[[str], str]:
    queue = list(lines)

    def read(prompt: str) -> str:
        item = queue.pop(0) if queue else EOFError
        if isinstance(item, type):
            raise item()
        return item

    return read


def test_an_answer_is_streamed_and_ctrl_c_ends_it_with_the_connection_closed() -> None:
    service = Scripted("http://x", answers=[words("Hel", "lo"), interrupted_after("Par")])
    out = io.StringIO()
    assert stream_answer(service, {"model": "m", "messages": []}, out) == ("Hello", False)
    assert service.bodies[0]["stream"] is True
    assert stream_answer(service, {"model": "m", "messages": []}, out) == ("Par", True)
    assert out.getvalue() == "HelloPar"
    assert service.closed == [True, True]


def test_a_conversation_keeps_its_history_until_cleared() -> None:
    service = Scripted("http://x", answers=[words("Hi!"), interrupted_after("Par"), refused, words("Yes.")])
    out, err = io.StringIO(), io.StringIO()
    read = typed("hello", "", "capital of France?", "again", KeyboardInterrupt, "/clear", "ok?", "/bye", "never")
    assert conversation(service, "m", "Be brief.", {"temperature": 0}, read=read, out=out, err=err) == 0
    system = {"role": "system", "content": "Be brief."}
    first, second, third, fourth = service.bodies
    assert first == {
        "model": "m",
        "messages": [system, {"role": "user", "content": "hello"}],
        "options": {"temperature": 0},
        "stream": True,
    }
    assert second["messages"][1:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "capital of France?"},
    ]
    assert third["messages"][-2:] == [
        {"role": "assistant", "content": "Par"},
        {"role": "user", "content": "again"},
    ], "a stopped answer stays as far as it came"
    assert fourth["messages"] == [system, {"role": "user", "content": "ok?"}], "the refused turn was dropped"
    assert "(stopped)" in err.getvalue() and "error: 404: model 'nope' not found" in err.getvalue()
    assert "(conversation cleared)" in err.getvalue() and "/bye or Ctrl-D ends" in err.getvalue()
    assert out.getvalue() == "Hi!\nPar\n\nYes.\n"


def test_end_of_input_ends_a_conversation() -> None:
    service = Scripted("http://x")
    assert conversation(service, "m", None, {}, read=typed(), out=io.StringIO(), err=io.StringIO()) == 0
    assert service.bodies == []


class Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def args(*prompt: str, option: list[str] | None = None, system: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(model="m", prompt=list(prompt), system=system, option=option)


def test_the_prompt_comes_from_the_command_line_or_piped_stdin() -> None:
    service = Scripted("http://x", answers=[words("4"), words("ok")])
    out, err = io.StringIO(), io.StringIO()
    code = run_chat(args("what", "is 2+2?", option=["num_predict=8"]), service, Stdin("", True), out, err)
    assert code == 0 and out.getvalue() == "4\n"
    assert service.bodies[0]["messages"] == [{"role": "user", "content": "what is 2+2?"}]
    assert service.bodies[0]["options"] == {"num_predict": 8}
    code = run_chat(args(system="S"), service, Stdin("piped text\n", False), out, err)
    assert code == 0 and service.bodies[1]["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "piped text"},
    ]


def test_exit_codes_no_prompt_bad_option_refusal_and_ctrl_c() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_chat(args(), Scripted("http://x"), Stdin("  \n", False), out, err) == 2
    assert "no prompt" in err.getvalue()
    assert run_chat(args("hi", option=["temperature"]), Scripted("http://x"), Stdin("", True), out, err) == 2
    assert "name=value" in err.getvalue()
    assert run_chat(args("hi"), Scripted("http://x", answers=[refused]), Stdin("", True), out, err) == 1
    assert "error: 404:" in err.getvalue()
    stopped = Scripted("http://x", answers=[interrupted_after("tok ")])
    assert run_chat(args("hi"), stopped, Stdin("", True), out, err) == 130
    assert err.getvalue().endswith("(stopped)\n") and stopped.closed == [True]
