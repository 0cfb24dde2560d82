"""Responses API <-> native: the request's conversion, the fields refused by name, truncation, and the response
object and events, checked against the official SDK's own types."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.responses import ResponsesRequest, refuse_unsupported_fields
from shared_ollama.protocol.responses_convert import drop_oldest, request_to_native, turns
from shared_ollama.protocol.responses_stream import ResponseEvents, output_to_native, response_shape

JsonDict = dict[str, Any]
EVENTS = TypeAdapter(ResponseStreamEvent)
IMAGE = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}}},
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "hi", **fields})


def native(**fields: Any) -> JsonDict:
    return request_to_native(request(**fields), []).body()


def refused(**fields: Any) -> str | None:
    with pytest.raises(InvalidRequest) as info:
        request_to_native(request(**fields), [])
    return info.value.param


# ---------------------------------------------------------------- requests


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    body = native(instructions="Be brief.", temperature=0.2, top_p=0.5, max_output_tokens=12, stream=True)
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert body["options"] == {"temperature": 0.2, "top_p": 0.5, "num_predict": 12}
    assert body["stream"] is True
    assert "format" not in body
    assert "tools" not in body


def test_message_items_with_text_and_images() -> None:
    prepared = request_to_native(
        request(
            input=[
                {"role": "developer", "content": "Answer in French."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": IMAGE, "detail": "low"},
                    ],
                },
            ]
        ),
        [],
    )
    assert prepared.conversation == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is this?", "images": [IMAGE]},
    ]
    assert prepared.detail == "low"
    assert [item["type"] for item in prepared.items] == ["message", "message"]
    assert all(item["id"].startswith("msg_") for item in prepared.items)
    assert prepared.items[0]["content"] == [{"type": "input_text", "text": "Answer in French."}]


def test_the_highest_image_detail_wins() -> None:
    parts = [{"type": "input_image", "image_url": IMAGE, "detail": d} for d in ("low", "original", "high")]
    assert request_to_native(request(input=[{"role": "user", "content": parts}]), []).detail == "original"


def test_images_by_file_id_are_refused() -> None:
    content = [{"type": "input_image", "file_id": "file-1"}]
    assert refused(input=[{"role": "user", "content": content}]) == "input[0].content[0]"


def test_an_assistant_message_takes_output_text_only() -> None:
    assert refused(input=[{"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}]) == (
        "input[0].content[0]"
    )
    replayed = [{"role": "assistant", "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}]
    assert native(input=replayed)["messages"] == [{"role": "assistant", "content": "Paris."}]


def test_a_function_call_and_its_output_become_a_tool_turn() -> None:
    prepared = request_to_native(
        request(
            input=[
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ]
        ),
        [],
    )
    assert prepared.conversation[1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"},
    ]
    call, output = prepared.items[1:]
    assert call["type"] == "function_call" and call["id"].startswith("fc_") and call["status"] == "completed"
    assert output["type"] == "function_call_output" and output["output"] == "sunny"


def test_a_function_call_output_may_answer_a_call_of_the_previous_response() -> None:
    history = output_to_native(
        [{"type": "function_call", "call_id": "call_9", "name": "get_time", "arguments": "{}", "id": "fc_1"}]
    )
    prepared = request_to_native(
        request(input=[{"type": "function_call_output", "call_id": "call_9", "output": "noon"}]), history
    )
    assert prepared.conversation[-1]["tool_name"] == "get_time"
    assert prepared.conversation[0]["tool_calls"][0]["id"] == "call_9"


def test_an_output_for_an_unknown_call_is_refused_by_name() -> None:
    assert refused(input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}]) == "input[0].call_id"


def test_call_arguments_must_be_a_json_object() -> None:
    item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}
    assert refused(input=[item]) == "input[0].arguments"


def test_text_format_becomes_the_native_format() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    strict = {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}}
    assert native(text=strict)["format"] == schema
    assert native(text={"format": {"type": "json_object"}})["format"] == "json"
    assert "format" not in native(text={"format": {"type": "text"}})
    assert refused(text={"format": {"type": "json_schema", "schema": schema}}) == "text.format"


# ---------------------------------------------------------------- tools


def test_auto_tools_are_native_tools_and_none_sends_none() -> None:
    body = native(tools=[WEATHER])
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["parameters"],
                "description": "The weather in a city",
            },
        }
    ]
    assert "format" not in body
    assert "tools" not in native(tools=[WEATHER], tool_choice="none")


def test_a_named_function_is_forced_by_its_parameters_schema() -> None:
    prepared = request_to_native(
        request(tools=[WEATHER, TIME], tool_choice={"type": "function", "name": "get_weather"}), []
    )
    assert prepared.forced is not None and prepared.forced.name == "get_weather"
    body = prepared.body()
    assert body["format"] == WEATHER["parameters"]
    assert "tools" not in body
    assert "get_weather (The weather in a city)" in body["messages"][0]["content"]


def test_required_with_several_tools_asks_for_a_name_and_arguments() -> None:
    prepared = request_to_native(request(tools=[WEATHER, TIME], tool_choice="required"), [])
    assert prepared.forced is not None and prepared.forced.name is None
    shapes = prepared.body()["format"]["anyOf"]
    assert [s["properties"]["name"] for s in shapes] == [{"const": "get_weather"}, {"const": "get_time"}]
    # a function without parameters is called with exactly {}
    assert shapes[1]["properties"]["arguments"]["additionalProperties"] is False


def test_allowed_tools_restrict_the_tools() -> None:
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]}
    assert [t["function"]["name"] for t in native(tools=[WEATHER, TIME], tool_choice=choice)["tools"]] == ["get_time"]
    choice["mode"] = "required"
    prepared = request_to_native(request(tools=[WEATHER, TIME], tool_choice=choice), [])
    assert prepared.forced is not None and prepared.forced.names == ("get_time",)


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}},
        {"tool_choice": "required"},
        {"tools": [WEATHER], "tool_choice": "required", "text": {"format": {"type": "json_object"}}},
    ],
)
def test_tool_choices_that_cannot_be_honoured_are_refused(fields: JsonDict) -> None:
    assert refused(**fields) == "tool_choice"


def test_duplicate_tool_names_are_refused() -> None:
    assert refused(tools=[WEATHER, WEATHER]) == "tools"


# ---------------------------------------------------------------- refused fields


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"input": [{"role": "user", "content": "x", "phase": "commentary"}]}, "input[0].phase"),
        ({"text": {"format": {"type": "json_object", "description": "d"}}}, "text.format.description"),
    ],
)
def test_fields_nothing_honours_are_refused_by_name(fields: JsonDict, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        refuse_unsupported_fields(request(**fields))
    assert info.value.param == name


def test_empty_and_neutral_values_ask_for_nothing() -> None:
    refuse_unsupported_fields(request(include=[], reasoning=None, service_tier="auto"))


def first_error(body: JsonDict) -> str:
    """Where the first validation error of ``body`` is (what the 400's ``param`` names)."""
    with pytest.raises(ValidationError) as info:
        ResponsesRequest.model_validate({"model": "m", "input": "hi", **body})
    return ".".join(str(p) for p in info.value.errors()[0]["loc"])


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input.0.message.content.0",
        ),
        ({"input": []}, "input"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"truncation": "sometimes"}, "truncation"),
        ({"user": "u" * 257}, "user"),
    ],
)
def test_malformed_fields_fail_validation_where_they_are(fields: JsonDict, location: str) -> None:
    assert first_error(fields) == location


# ---------------------------------------------------------------- truncation


def test_the_oldest_turns_go_first_and_tool_results_stay_with_their_call() -> None:
    conversation = [
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "content": "r", "tool_name": "f"},
        {"role": "user", "content": "2"},
    ]
    assert [len(group) for group in turns(conversation)] == [1, 2, 1]
    assert drop_oldest(conversation, 1) == conversation[1:]
    assert drop_oldest(conversation, 2) == conversation[3:]
    assert drop_oldest(conversation, 99) == conversation[3:]  # the newest turn always stays


# ---------------------------------------------------------------- the response object and its events


def machine(req: ResponsesRequest | None = None, **options: Any) -> ResponseEvents:
    req = req or request()
    counter = itertools.count()
    shape = response_shape(req, response_id="resp_1", created_at=1, model="m")
    return ResponseEvents(shape, ids=lambda prefix: f"{prefix}_{next(counter)}", clock=lambda: 2.0, **options)


def chunk(text: str = "", **fields: Any) -> JsonDict:
    return {"message": {"role": "assistant", "content": text}, "done": False, **fields}


def final(text: str = "", reason: str = "stop", **message: Any) -> JsonDict:
    return {
        "message": {"role": "assistant", "content": text, **message},
        "done": True,
        "done_reason": reason,
        "prompt_eval_count": 7,
        "eval_count": 3,
    }


def run(events: ResponseEvents, *natives: JsonDict) -> list[JsonDict]:
    out = events.start()
    for item in natives:
        out += events.feed(item)
    for event in out:
        EVENTS.validate_python(event)  # every event as the SDK's own types define it
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_a_streamed_answer_makes_the_whole_event_sequence() -> None:
    events = machine()
    out = run(events, chunk("Par"), chunk("is"), final())
    assert [e["type"] for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert out[6]["text"] == "Paris"
    response = Response.model_validate(out[-1]["response"])
    assert response.status == "completed"
    assert response.output_text == "Paris"
    assert response.usage is not None and (response.usage.input_tokens, response.usage.total_tokens) == (7, 10)
    assert response.completed_at == 2
    assert events.response == out[-1]["response"]


def test_a_whole_answer_gives_the_same_object_as_its_stream() -> None:
    streamed, whole = machine(), machine()
    run(streamed, chunk("Paris"), final())
    run(whole, final("Paris"))
    assert streamed.response == whole.response


def test_an_answer_cut_by_max_output_tokens_is_incomplete() -> None:
    out = run(machine(), chunk("Par"), final(reason="length"))
    assert out[-1]["type"] == "response.incomplete"
    response = Response.model_validate(out[-1]["response"])
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_an_empty_answer_is_one_empty_message() -> None:
    out = run(machine(), final())
    assert Response.model_validate(out[-1]["response"]).output_text == ""


def test_the_models_own_tool_calls_become_function_call_items() -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]
    out = run(machine(), final(tool_calls=calls))
    kinds = [e["type"] for e in out[2:-1]]
    assert (
        kinds
        == [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
        ]
        * 2
    )
    response = Response.model_validate(out[-1]["response"])
    first = response.output[0]
    assert first.type == "function_call"
    assert (first.name, first.arguments, first.call_id) == ("get_weather", '{"city":"Paris"}', "call_1")
    one = run(machine(parallel=False), final(tool_calls=calls))
    assert len(one[-1]["response"]["output"]) == 1  # parallel_tool_calls: false keeps the first call


def forced_machine(choice: Any) -> ResponseEvents:
    req = request(tools=[WEATHER, TIME], tool_choice=choice)
    return machine(req, forced=request_to_native(req, []).forced)


def test_a_forced_call_streams_its_arguments() -> None:
    events = forced_machine({"type": "function", "name": "get_weather"})
    out = run(events, chunk('{"city":'), chunk('"Rome"}'), final())
    deltas = [e["delta"] for e in out if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city":', '"Rome"}']
    done = next(e for e in out if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == '{"city":"Rome"}'
    response = Response.model_validate(out[-1]["response"])
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert response.status == "completed"


def test_a_forced_call_cut_short_is_incomplete() -> None:
    out = run(forced_machine({"type": "function", "name": "get_weather"}), chunk('{"ci'), final(reason="length"))
    response = Response.model_validate(out[-1]["response"])
    assert response.status == "incomplete"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_a_forced_choice_among_several_is_read_whole() -> None:
    out = run(forced_machine("required"), chunk('{"name":"get_time",'), chunk('"arguments":{}}'), final())
    response = Response.model_validate(out[-1]["response"])
    call = response.output[0]
    assert call.type == "function_call" and (call.name, call.arguments) == ("get_time", "{}")


def test_a_failure_ends_the_stream_with_response_failed() -> None:
    events = machine()
    out = run(events, chunk("Par"))
    failed = events.fail({"code": "server_error", "message": "engine gone"})
    EVENTS.validate_python(failed[0])
    assert failed[0]["type"] == "response.failed" and failed[0]["sequence_number"] == len(out)
    response = Response.model_validate(failed[0]["response"])
    assert response.status == "failed" and response.error is not None
    assert response.output_text == "Par"
    assert events.fail({"code": "server_error", "message": "again"}) == []  # one terminal event only


def test_the_response_echoes_the_request() -> None:
    req = request(
        instructions="Be brief.",
        metadata={"ticket": "42"},
        temperature=0.5,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        text=None,
        truncation="auto",
        user="u1",
        store=False,
    )
    response = Response.model_validate(response_shape(req, response_id="resp_x", created_at=5, model="m"))
    assert response.instructions == "Be brief." and response.metadata == {"ticket": "42"}
    assert response.temperature == 0.5 and response.truncation == "auto" and response.user == "u1"
    assert response.tools[0].name == "get_weather"  # type: ignore[union-attr]
    assert response.tool_choice.name == "get_weather"  # type: ignore[union-attr]


def test_output_continues_as_one_assistant_message() -> None:
    output = [
        {"type": "message", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
    ]
    assert output_to_native(output) == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}}],
        }
    ]
