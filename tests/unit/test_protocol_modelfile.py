"""Ollama Modelfiles: parsing every instruction, typed parameters, errors naming the line, and round trips."""

from __future__ import annotations

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.modelfile import (
    Modelfile,
    ModelfileError,
    coerce_parameter,
    is_file_reference,
    parse_modelfile,
    render_modelfile,
)

FULL = '''# A pirate, from the small model
FROM smollm2:135m
ADAPTER ./lora.gguf
TEMPLATE """{% for m in messages %}{{ m.content }}{% endfor %}"""
SYSTEM You are a pirate.
PARAMETER temperature 0.7
PARAMETER num_ctx 2048
PARAMETER use_mmap false
PARAMETER stop <|im_end|>
PARAMETER stop "END OF TURN"
MESSAGE user Who are you?
MESSAGE assistant "A pirate, \\"arr\\"."
LICENSE MIT
LICENSE """Second
license"""
'''


def test_every_instruction() -> None:
    parsed = parse_modelfile(FULL)
    assert parsed == Modelfile(
        from_="smollm2:135m",
        system="You are a pirate.",
        template="{% for m in messages %}{{ m.content }}{% endfor %}",
        license=["MIT", "Second\nlicense"],
        adapters=["./lora.gguf"],
        parameters={"temperature": 0.7, "num_ctx": 2048, "use_mmap": False, "stop": ["<|im_end|>", "END OF TURN"]},
        messages=[
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": 'A pirate, "arr".'},
        ],
    )


def test_instructions_and_parameter_names_are_case_insensitive() -> None:
    parsed = parse_modelfile("from base\nsystem hi\nParameter TEMPERATURE 1\nmessage USER hello\nTemplate t\n")
    assert (parsed.from_, parsed.system, parsed.template) == ("base", "hi", "t")
    assert parsed.parameters == {"temperature": 1.0}
    assert parsed.messages == [{"role": "user", "content": "hello"}]


def test_comments_blank_lines_and_whitespace_are_ignored() -> None:
    parsed = parse_modelfile("\n  # comment\n\n\tFROM   base  \r\n# SYSTEM not this\nSYSTEM\t  spaced out  \n")
    assert (parsed.from_, parsed.system) == ("base", "spaced out")


def test_triple_quoted_values_span_lines_verbatim() -> None:
    text = 'FROM b\nSYSTEM """\nLine one.\n# not a comment\n  "quoted" line\n"""\nPARAMETER seed 1\n'
    parsed = parse_modelfile(text)
    assert parsed.system == '\nLine one.\n# not a comment\n  "quoted" line\n'
    assert parsed.parameters == {"seed": 1}


def test_quoted_values_keep_spaces_and_unescape() -> None:
    parsed = parse_modelfile('FROM "my model"\nSYSTEM "  two\nlines \\\\ and \\"q\\"  "\nPARAMETER stop " "\n')
    assert parsed.from_ == "my model"
    assert parsed.system == '  two\nlines \\ and "q"  '
    assert parsed.parameters["stop"] == [" "]


def test_the_last_system_template_and_from_win() -> None:
    parsed = parse_modelfile("FROM a\nFROM b\nSYSTEM one\nSYSTEM two\n")
    assert (parsed.from_, parsed.system) == ("b", "two")


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("num_predict -1", "num_predict", -1),
        ("top_k 40", "top_k", 40),
        ("seed 42", "seed", 42),
        ("num_thread 8", "num_thread", 8),
        ("top_p 0.9", "top_p", 0.9),
        ("min_p 0", "min_p", 0.0),
        ("repeat_penalty 1.1", "repeat_penalty", 1.1),
        ("presence_penalty 1e-2", "presence_penalty", 0.01),
        ("use_mlock TRUE", "use_mlock", True),
        ("penalize_newline 0", "penalize_newline", False),
        ("use_mmap t", "use_mmap", True),
    ],
)
def test_parameters_are_typed(line: str, name: str, value: object) -> None:
    parameters = parse_modelfile(f"FROM b\nPARAMETER {line}\n").parameters
    assert parameters == {name: value}
    assert type(parameters[name]) is type(value)


def test_json_parameter_values_are_checked_too() -> None:
    assert coerce_parameter("num_ctx", 2048.0) == 2048
    assert coerce_parameter("temperature", 0) == 0.0
    assert coerce_parameter("stop", "x") == ["x"]
    for name, value in (("num_ctx", 1.5), ("temperature", True), ("use_mmap", 1), ("stop", [1]), ("nope", 1)):
        with pytest.raises(ValueError):
            coerce_parameter(name, value)


def _error(text: str) -> ModelfileError:
    with pytest.raises(ModelfileError) as caught:
        parse_modelfile(text)
    return caught.value


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "no FROM"),
        ("# only a comment\nSYSTEM hi\n", 1, "no FROM"),
        ("FROM b\n\nRUN something\n", 3, "unknown instruction 'RUN'"),
        ("FROM b\nSYSTEM hi\n\nPARAMETER tempreature 0.7\n", 4, "unknown parameter 'tempreature'"),
        ("FROM b\nPARAMETER num_ctx big\n", 2, "must be an integer"),
        ("FROM b\nPARAMETER num_ctx 1.5\n", 2, "must be an integer"),
        ("FROM b\nPARAMETER temperature hot\n", 2, "must be a number"),
        ("FROM b\nPARAMETER use_mmap maybe\n", 2, "true or false"),
        ("FROM b\nPARAMETER temperature\n", 2, "needs a value"),
        ("FROM b\nPARAMETER\n", 2, "needs a name"),
        ('FROM b\nSYSTEM """never\nclosed\n', 2, 'unterminated """'),
        ('FROM b\nSYSTEM "never closed\n', 2, 'unterminated "'),
        ('FROM b\nSYSTEM """x""" trailing\n', 2, "after the closing quote"),
        ("FROM b\nMESSAGE tool hi\n", 2, "MESSAGE role must be one of system, user, assistant"),
        ("FROM b\nMESSAGE\n", 2, "MESSAGE role"),
        ("FROM b\nMESSAGE user\n", 2, "needs a value"),
        ("FROM\n", 1, "FROM needs a value"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    error = _error(text)
    assert error.line == line
    assert str(error).startswith(f"Modelfile line {line}: ")
    assert words in str(error)


def test_errors_are_400s_for_the_gateway() -> None:
    error = _error("FROM b\nPARAMETER tempreature 1\n")
    assert isinstance(error, InvalidRequest)
    assert error.status == 400
    assert error.message == "Modelfile line 2: unknown parameter 'tempreature'"


def test_create_request_is_ollamas_structured_body() -> None:
    parsed = parse_modelfile(FULL.replace("ADAPTER ./lora.gguf\n", ""))
    assert parsed.to_create_request("pirate:test") == {
        "model": "pirate:test",
        "from": "smollm2:135m",
        "system": "You are a pirate.",
        "template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        "license": ["MIT", "Second\nlicense"],
        "parameters": {"temperature": 0.7, "num_ctx": 2048, "use_mmap": False, "stop": ["<|im_end|>", "END OF TURN"]},
        "messages": [
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": 'A pirate, "arr".'},
        ],
    }
    assert parse_modelfile("FROM b\n").to_create_request("x") == {"model": "x", "from": "b"}


def test_adapters_cannot_become_a_create_request() -> None:
    with pytest.raises(ModelfileError, match="line 3: ADAPTER"):
        parse_modelfile("FROM b\n\nADAPTER ./x.gguf\n").to_create_request("x")


def test_uploaded_files_and_adapters_become_a_create_request() -> None:
    parsed = parse_modelfile("FROM ./model.gguf\nADAPTER ./lora.gguf\nSYSTEM Hi.\n")
    digests = {"model.gguf": "sha256:aa"}, {"lora.gguf": "sha256:bb"}
    assert parsed.to_create_request("x", files=digests[0], adapters=digests[1]) == {
        "model": "x",
        "files": {"model.gguf": "sha256:aa"},
        "adapters": {"lora.gguf": "sha256:bb"},
        "system": "Hi.",
    }
    on_a_model = parse_modelfile("FROM base:1b\nADAPTER ./lora.gguf\n").to_create_request("x", adapters=digests[1])
    assert on_a_model == {"model": "x", "from": "base:1b", "adapters": {"lora.gguf": "sha256:bb"}}


@pytest.mark.parametrize(
    ("value", "is_file"),
    [
        ("./model.gguf", True),
        ("../models/m.gguf", True),
        ("/srv/models/m", True),
        ("~/m.gguf", True),
        ("Model.GGUF", True),
        ("smollm2:135m", False),
        ("library/llama3", False),
        ("hf.co/owner/repo:Q4_K_M", False),
    ],
)
def test_from_names_a_file_or_a_model(value: str, is_file: bool) -> None:
    assert is_file_reference(value) is is_file


@pytest.mark.parametrize(
    "system",
    [
        "You are a pirate.",
        'Say "ARRR".',
        'Multi\nline "quoted"\n  indented',
        'ends with a quote"',
        'has """ triple quotes',
        "  leading and trailing  ",
        "\n",
        "",
        '"',
        "back\\slash\\",
        '\\"',
        "# not a comment",
    ],
)
def test_render_then_parse_round_trips(system: str) -> None:
    parameters = {"temperature": 0.0, "num_ctx": 4096, "use_mmap": True, "stop": ["<|im_end|>", "two words", '"']}
    text = render_modelfile("smollm2:135m", system=system, parameters=parameters)
    parsed = parse_modelfile(text)
    assert parsed.from_ == "smollm2:135m"
    assert parsed.system == system
    assert parsed.parameters == parameters


def test_render_writes_every_field_and_reads_back() -> None:
    original = parse_modelfile(FULL)
    assert parse_modelfile(original.render()) == original
    messages = [{"role": "user", "content": "hi"}]
    text = render_modelfile("b", comment="generated\nby a test", license="MIT", messages=messages)
    assert text.startswith("# generated\n# by a test\nFROM b\n")
    assert parse_modelfile(text).license == ["MIT"]


def test_render_takes_parameters_as_text_from_the_cli() -> None:
    text = render_modelfile("smollm2:135m", system="Be brief.", parameters={"temperature": "0.2", "stop": "END"})
    assert text == "FROM smollm2:135m\nSYSTEM Be brief.\nPARAMETER temperature 0.2\nPARAMETER stop END\n"
    assert parse_modelfile(text).parameters == {"temperature": 0.2, "stop": ["END"]}
