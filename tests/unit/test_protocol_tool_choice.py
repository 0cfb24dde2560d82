"""tool_choice honoured over the native API: forced calls become a call-shaped format, answers become calls."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.tool_choice import (
    ForcedCallStream,
    call_from_answer,
    call_schema,
    forced_call,
    with_instructions,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def answer(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "m", "message": {"role": "assistant", "content": content}, "done": True, **fields}


def test_auto_none_and_unset_force_nothing() -> None:
    for choice in (None, "auto", "none"):
        assert forced_call([WEATHER], choice) is None


def test_required_allows_every_tool_and_a_named_function_only_itself() -> None:
    required = forced_call([WEATHER, TIME], "required")
    assert required is not None and required.names == ("get_weather", "get_time")
    named = forced_call([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}})
    assert named is not None and named.names == ("get_time",)


@pytest.mark.parametrize(
    ("tools", "choice"),
    [
        (None, "required"),
        ([WEATHER], {"type": "function", "function": {"name": "nope"}}),
        ([WEATHER], {"type": "function"}),
        ([WEATHER], "sometimes"),
        ([{"type": "web_search"}], "required"),
    ],
)
def test_a_choice_that_cannot_be_honoured_is_a_400(tools: list[dict[str, Any]] | None, choice: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        forced_call(tools, choice)  # type: ignore[arg-type]
    assert refused.value.param in ("tool_choice", "tools")


def test_the_format_is_a_call_with_the_functions_parameters() -> None:
    one = forced_call([WEATHER], "required")
    assert one is not None
    assert call_schema(one) == {
        "type": "object",
        "properties": {
            "name": {"type": "string", "enum": ["get_weather"]},
            "arguments": WEATHER["function"]["parameters"],  # type: ignore[index]
        },
        "required": ["name", "arguments"],
    }
    two = forced_call([WEATHER, TIME], "required")
    assert two is not None
    schemas = call_schema(two)["anyOf"]
    assert [s["properties"]["name"]["enum"] for s in schemas] == [["get_weather"], ["get_time"]]
    assert schemas[1]["properties"]["arguments"] == {"type": "object", "properties": {}}


def test_the_instructions_join_the_first_system_message_or_come_first() -> None:
    forced = forced_call([WEATHER], "required")
    assert forced is not None
    asked = [{"role": "user", "content": "hi"}]
    added = with_instructions(asked, forced)
    assert added[0]["role"] == "system" and "get_weather" in added[0]["content"] and added[1:] == asked
    joined = with_instructions([{"role": "system", "content": "Be brief."}, *asked], forced)
    assert joined[0]["content"].startswith("Be brief.\n\n") and len(joined) == 2


def test_the_json_answer_becomes_the_tool_call() -> None:
    forced = forced_call([WEATHER], "required")
    assert forced is not None
    call = call_from_answer(answer('{"name": "get_weather", "arguments": {"city": "Paris"}}'), forced)
    assert call["message"] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }


@pytest.mark.parametrize(
    "content", ['{"name": "get_weather", "arguments": {"ci', '{"name": "other", "arguments": {}}', "[1]", "prose"]
)
def test_an_answer_that_is_not_the_call_stays_as_it_is(content: str) -> None:
    forced = forced_call([WEATHER], "required")
    assert forced is not None
    native = answer(content, done_reason="length")
    assert call_from_answer(native, forced) == native


def test_a_streamed_call_is_held_back_until_the_end() -> None:
    forced = forced_call([WEATHER], "required")
    assert forced is not None
    stream = ForcedCallStream(forced)
    text = orjson.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}).decode()
    pieces = [text[:10], text[10:25], text[25:]]
    for piece in pieces:
        chunk = {"message": {"role": "assistant", "content": piece}, "done": False, "logprobs": [{"token": piece}]}
        assert stream.feed(chunk) is None
    final = stream.feed({"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 9})
    assert final is not None
    assert final["message"]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert final["eval_count"] == 9
    assert [t["token"] for t in final["logprobs"]] == pieces
