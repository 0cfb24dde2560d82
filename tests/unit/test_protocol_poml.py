"""POML on /api/v1/chat, the pure part: the request fields, the rendered result as a native chat, and the
renderer's error output as a message (the renderer itself: tests/integration/test_poml_renderer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.native import ChatRequest
from shared_ollama.protocol.poml import PomlInput, apply_rendered, renderer_message, take_poml

LIMIT = 1000


def refused(fn: Any, *args: Any, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        fn(*args, **kwargs)
    return caught.value


def test_a_plain_chat_has_no_template() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert take_poml(body, max_bytes=LIMIT) is None
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_the_template_and_its_variables_leave_the_body() -> None:
    body = {"model": "m", "poml": "<poml>x</poml>", "context": {"name": "Ada"}, "stream": False}
    assert take_poml(body, max_bytes=LIMIT) == PomlInput("<poml>x</poml>", {"name": "Ada"})
    assert body == {"model": "m", "stream": False}


def test_variables_are_optional() -> None:
    assert take_poml({"poml": "<poml>x</poml>"}, max_bytes=LIMIT) == PomlInput("<poml>x</poml>", {})


def test_context_without_a_template_is_refused_naming_context() -> None:
    error = refused(take_poml, {"messages": [], "context": {"a": 1}}, max_bytes=LIMIT)
    assert error.param == "context"
    assert "context" in error.message


def test_a_template_with_messages_is_refused_naming_poml() -> None:
    error = refused(take_poml, {"poml": "<poml>x</poml>", "messages": []}, max_bytes=LIMIT)
    assert error.param == "poml"
    assert "poml" in error.message and "messages" in error.message


@pytest.mark.parametrize("markup", ["", "   ", 42, ["<poml/>"]])
def test_a_template_must_be_a_non_empty_string(markup: object) -> None:
    assert refused(take_poml, {"poml": markup}, max_bytes=LIMIT).param == "poml"


def test_a_template_over_the_limit_is_refused_with_both_sizes() -> None:
    markup = "<poml>" + "é" * 500 + "</poml>"  # 1013 bytes of UTF-8, 513 characters
    error = refused(take_poml, {"poml": markup}, max_bytes=LIMIT)
    assert error.param == "poml"
    assert "1013 bytes" in error.message and "1000" in error.message


@pytest.mark.parametrize("context", [[1, 2], "name=Ada", 3])
def test_variables_must_be_an_object(context: object) -> None:
    assert refused(take_poml, {"poml": "<poml>x</poml>", "context": context}, max_bytes=LIMIT).param == "context"


def rendered(*messages: tuple[str, object], **extra: object) -> dict[str, Any]:
    return {"messages": [{"speaker": s, "content": c} for s, c in messages], **extra}


def test_speakers_become_native_roles() -> None:
    body: dict[str, Any] = {"model": "m"}
    apply_rendered(body, rendered(("system", "be terse"), ("human", "hi"), ("ai", "hello"), ("human", "again")))
    assert body["messages"] == [
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    ChatRequest.model_validate(body)  # a valid native chat


def test_text_parts_are_joined() -> None:
    body: dict[str, Any] = {}
    apply_rendered(body, rendered(("human", ["first", "second"])))
    assert body["messages"] == [{"role": "user", "content": "first\n\nsecond"}]


@pytest.mark.parametrize(
    "content",
    [
        ["look", {"type": "image/png", "base64": "iVBORw0KGgo=", "alt": "x"}],
        [{"type": "application/vnd.poml.toolrequest", "id": "1", "name": "f", "content": {}}],
    ],
)
def test_images_and_tool_calls_are_refused_naming_poml(content: object) -> None:
    error = refused(apply_rendered, {}, rendered(("human", content)))
    assert error.param == "poml"
    assert "only text" in error.message


@pytest.mark.parametrize("result", [rendered(), {"messages": "x"}, "text", rendered(("tool", "r")), {"x": 1}])
def test_a_result_that_is_not_a_chat_is_refused(result: object) -> None:
    assert refused(apply_rendered, {}, result).param == "poml"


def test_an_output_schema_becomes_the_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body: dict[str, Any] = {}
    apply_rendered(body, rendered(("human", "hi"), schema=schema))
    assert body["format"] == schema


def test_a_schema_and_a_format_are_refused_naming_format() -> None:
    body: dict[str, Any] = {"format": "json"}
    error = refused(apply_rendered, body, rendered(("human", "hi"), schema={"type": "object"}))
    assert error.param == "format"


def test_tool_definitions_become_native_tools() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "name": "weather", "description": "the weather", "parameters": params}]
    body: dict[str, Any] = {}
    apply_rendered(body, rendered(("human", "hi"), tools=tools))
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "the weather", "parameters": params}}
    ]
    ChatRequest.model_validate(body)


def test_template_tools_and_request_tools_are_refused_naming_tools() -> None:
    body: dict[str, Any] = {"tools": []}
    error = refused(apply_rendered, body, rendered(("human", "hi"), tools=[{"name": "f"}]))
    assert error.param == "tools"


def test_runtime_parameters_become_options_and_the_request_wins() -> None:
    body: dict[str, Any] = {"options": {"temperature": 0}}
    runtime = {"temperature": 0.7, "maxTokens": 8, "topP": 0.5, "stopSequences": ["\n"], "model": "tpl"}
    apply_rendered(body, rendered(("human", "hi"), runtime=runtime))
    assert body["options"] == {"temperature": 0, "num_predict": 8, "top_p": 0.5, "stop": ["\n"]}
    assert body["model"] == "tpl"
    named: dict[str, Any] = {"model": "mine"}
    apply_rendered(named, rendered(("human", "hi"), runtime={"model": "tpl"}))
    assert named["model"] == "mine"


def test_an_unknown_runtime_parameter_is_refused_naming_it() -> None:
    error = refused(apply_rendered, {}, rendered(("human", "hi"), runtime={"reasoningEffort": "high"}))
    assert error.param == "poml"
    assert "'reasoningEffort'" in error.message and "maxTokens" in error.message


READ_ERROR = """/srv/venv/poml/js/cli.js:265087
        return new ReadError(message, props.originalStartIndex, props.originalEndIndex, props.sourcePath, options);
               ^

ReadError: missing is not defined
    at ReadError.fromProps (/srv/venv/poml/js/cli.js:265087:16)
  severity: 'error',
  startIndex: 21,
  endIndex: 31,
  sourcePath: '/tmp/work/template.poml',
  [cause]: ReferenceError: missing is not defined
"""


def test_the_renderers_message_and_position_are_kept() -> None:
    markup = "<poml>\n<human-msg>Hi {{missing}}</human-msg></poml>"
    assert renderer_message(READ_ERROR, markup, "/tmp/work") == (
        "the poml template could not be rendered: missing is not defined (at line 2, column 15)"
    )


def test_the_services_paths_are_not_shown() -> None:
    stderr = "Error: Image file not found: /tmp/work/x.png\n"
    message = renderer_message(stderr, "<poml/>", "/tmp/work")
    assert message == "the poml template could not be rendered: Image file not found: ./x.png"


def test_without_a_message_the_error_is_generic_and_long_ones_are_cut() -> None:
    assert renderer_message("Segmentation fault\n", "<poml/>", "/w") == "the poml template could not be rendered"
    long = renderer_message("Error: " + "x" * 5000 + "\n", "<poml/>", "/w")
    assert len(long) < 700 and long.endswith("...")
