"""Anthropic Messages: the request conversion to the native chat shape, the refusals, the answer's events (checked
against the official SDK's own types and accumulation), stop sequences, forced tool calls and the error mapping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from shared_ollama.errors import (
    BackendError,
    BackendUnavailable,
    Forbidden,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    QueueFull,
    RequestTimeout,
    RequestTooLarge,
    SharedOllamaError,
    TenantBusy,
    Unauthorized,
)
from shared_ollama.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    Plan,
    estimate_tokens,
    to_native,
    tokenize_body,
)
from shared_ollama.protocol.anthropic_stream import (
    Event,
    MessageEvents,
    StopScanner,
    accumulate,
    error_status_and_body,
    sse,
)
from tests.support.protocol import refused_field

JsonDict = dict[str, Any]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
EVENTS = TypeAdapter(RawMessageStreamEvent)


def request(**fields: Any) -> JsonDict:
    return {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], **fields}


def plan(**fields: Any) -> Plan:
    return to_native(MessagesRequest.model_validate(request(**fields)))


def refused(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        plan(**fields)
    return info.value


# ---------------------------------------------------------------- requests


def test_a_plain_request_becomes_a_native_chat() -> None:
    out = plan(system="Be brief.", temperature=0.5, top_p=0.9, top_k=40)
    assert out.body == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "options": {"num_predict": 16, "temperature": 0.5, "top_p": 0.9, "top_k": 40},
        "stream": False,
    }
    assert out.forced is None and out.stop_sequences == () and not out.one_tool_use


def test_system_blocks_and_a_system_message_are_system_messages() -> None:
    out = plan(
        system=[
            {"type": "text", "text": "One."},
            {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {"role": "system", "content": "Three."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
    )
    assert out.body["messages"] == [
        {"role": "system", "content": "One.\nTwo."},
        {"role": "system", "content": "Three."},
        {"role": "user", "content": "hi"},
    ]


def test_images_go_to_the_native_images_of_their_message() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    linked = {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}}
    out = plan(messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image, linked]}])
    assert out.body["messages"] == [
        {"role": "user", "content": "What is it?", "images": ["iVBORw0KGgo=", "https://example.org/cat.jpg"]}
    ]
    assert refused(messages=[{"role": "assistant", "content": [image]}]).param == "messages.0.content.0"
    assert "belong in user messages" in refused(messages=[{"role": "system", "content": [image]}]).message


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18 C"}]}
    failed = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "timeout", "is_error": True}
    out = plan(
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, use]},
            {"role": "user", "content": [result, failed, {"type": "text", "text": "And so?"}]},
        ],
    )
    assert out.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
        {"role": "tool", "content": "Error: timeout", "tool_name": "get_weather"},
        {"role": "user", "content": "And so?"},
    ]
    assert out.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city",
            },
        }
    ]
    orphan = refused(messages=[{"role": "user", "content": [{**result, "tool_use_id": "toolu_9"}]}])
    assert orphan.param == "messages.0.content.0.tool_use_id"
    assert "toolu_9" in orphan.message


def test_tool_choice_none_sends_no_tools_and_auto_sends_them() -> None:
    assert "tools" not in plan(tools=[WEATHER], tool_choice={"type": "none"}).body
    assert plan(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True}).one_tool_use
    assert len(plan(tools=[WEATHER]).body["tools"]) == 1


def test_a_named_tool_is_forced_through_its_input_schema() -> None:
    out = plan(tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_weather"}, system="Be kind.")
    assert out.forced is not None and out.forced.names == ("get_weather",) and not out.forced.wrapped
    assert out.body["format"] == WEATHER["input_schema"]
    assert "tools" not in out.body, "the engine answers under the schema alone"
    system = out.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be kind.\n\n")
    assert "get_weather" in system["content"]


def test_any_tool_is_a_choice_among_schemas() -> None:
    out = plan(tools=[WEATHER, TIME], tool_choice={"type": "any"})
    assert out.forced is not None and out.forced.wrapped and out.forced.names == ("get_weather", "get_time")
    options = out.body["format"]["anyOf"]
    assert [o["properties"]["name"] for o in options] == [{"const": "get_weather"}, {"const": "get_time"}]
    assert options[0]["properties"]["input"] == WEATHER["input_schema"]
    single = plan(tools=[WEATHER], tool_choice={"type": "any"})
    assert single.forced is not None and not single.forced.wrapped


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "any"}, "stop_sequences": ["x"]}, "stop_sequences"),
    ],
)
def test_tool_choices_that_cannot_be_honoured_are_400s(fields: JsonDict, param: str) -> None:
    assert refused(**fields).param == param


def test_stop_sequences_are_applied_on_the_way_back_from_a_stream() -> None:
    out = plan(stop_sequences=["END", "\n\n"])
    assert out.stop_sequences == ("END", "\n\n")
    assert "stop" not in out.body["options"], "the engine would drop the matched sequence unseen"
    assert out.body["stream"] is True
    assert plan(stream=True).body["stream"] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("thinking", {"type": "enabled", "budget_tokens": 2048}),
        ("service_tier", "auto"),
        ("container", "container_1"),
        ("mcp_servers", [{"type": "url", "url": "https://x", "name": "x"}]),
        ("output_config", {"effort": "low"}),
        ("context_management", {"edits": []}),
        ("inference_geo", "eu"),
        ("frobnicate", 1),
    ],
)
def test_fields_nothing_honours_are_refused_by_name(field: str, value: object) -> None:
    error = refused(**{field: value})
    assert error.param == field
    assert f"'{field}'" in error.message


def test_nested_fields_nothing_honours_are_refused_by_name() -> None:
    cited = {"type": "text", "text": "x", "citations": [{"type": "char_location"}]}
    assert refused(messages=[{"role": "user", "content": [cited]}]).param == "messages.0.content.0.citations"
    assert refused(tools=[{**WEATHER, "strict": True}]).param == "tools.0.strict"
    assert refused(metadata={"user_id": "u", "team": "x"}).param == "metadata.team"


def test_values_that_ask_for_nothing_pass() -> None:
    out = plan(
        thinking={"type": "disabled"},
        service_tier="standard_only",
        container=None,
        tools=[{**WEATHER, "type": "custom", "strict": False}],
        metadata={"user_id": "user-7"},
        cache_control={"type": "ephemeral", "ttl": "1h"},
    )
    assert out.body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({k: v for k, v in request().items() if k != "max_tokens"}, "max_tokens"),
        (request(max_tokens=0), "max_tokens"),
        (request(max_tokens=2**31), "max_tokens"),
        (request(temperature=1.5), "temperature"),
        (request(top_p=2), "top_p"),
        (request(top_k=-1), "top_k"),
        (request(messages=[]), "messages"),
        (request(metadata={"user_id": "u" * 257}), "metadata.user_id"),
        (request(stop_sequences=[""]), "stop_sequences.0"),
        (request(tools=[{**WEATHER, "input_schema": {"type": "string"}}]), "tools.0.input_schema"),
        (request(tool_choice={"type": "tool"}), "tool_choice"),
        (request(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]), "messages.0.content"),
    ],
)
def test_malformed_requests_are_refused_at_the_field(body: JsonDict, location: str) -> None:
    assert refused_field(MessagesRequest, body) == location


def test_unsupported_blocks_and_tool_types_say_what_they_are() -> None:
    with pytest.raises(ValueError, match="content block type 'thinking' is not supported"):
        MessagesRequest.model_validate(request(messages=[{"role": "assistant", "content": [{"type": "thinking"}]}]))
    with pytest.raises(ValueError, match="tool type 'web_search_20250305' is not supported"):
        MessagesRequest.model_validate(request(tools=[{"type": "web_search_20250305", "name": "web_search"}]))


def test_count_tokens_uses_the_same_conversion_and_counts_messages_and_tools() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "S", "tools": [WEATHER]}
    out = to_native(CountTokensRequest.model_validate(body))
    assert "options" not in out.body and "stream" not in out.body
    assert tokenize_body(out.body) == {"messages": out.body["messages"], "tools": out.body["tools"]}
    assert tokenize_body({"model": "m", "messages": []}) == {"messages": []}
    assert estimate_tokens({"messages": [{"role": "user", "content": "abcdef"}]}, 3) == 2 + 4
    with pytest.raises(InvalidRequest):
        to_native(CountTokensRequest.model_validate({**body, "max_tokens": 5}))


# ---------------------------------------------------------------- answers


def chunk(text: str = "", **fields: Any) -> JsonDict:
    return {"model": "m", "message": {"role": "assistant", "content": text, **fields}, "done": False}


def final(reason: str = "stop", text: str = "", **fields: Any) -> JsonDict:
    return {
        **chunk(text, **fields),
        "done": True,
        "done_reason": reason,
        "prompt_eval_count": 7,
        "eval_count": 3,
    }


def run(out: Plan, natives: list[JsonDict]) -> list[Event]:
    converter = MessageEvents(out, "msg_r1")
    return [event for native in natives for event in converter.feed(native)]


def sdk_message(events: list[Event]) -> Message:
    """The SDK's own parsing of every event and its own accumulation of the stream."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for name, data in events:
        assert data["type"] == name
        parsed = EVENTS.validate_python(data)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def kinds(events: list[Event]) -> list[str]:
    return [name for name, _ in events]


def test_a_streamed_answer_is_the_event_sequence_the_sdk_folds() -> None:
    events = run(plan(), [chunk("Hel"), chunk("lo"), final()])
    assert kinds(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    ours = accumulate(events)
    assert ours == {
        "id": "msg_r1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 3},
    }
    assert Message.model_validate(ours) == sdk_message(events)


def test_a_non_streamed_answer_is_one_final_chunk() -> None:
    message = accumulate(run(plan(), [final("length", "Hello there")]))
    assert message["content"] == [{"type": "text", "text": "Hello there"}]
    assert message["stop_reason"] == "max_tokens"
    empty = accumulate(run(plan(), [final()]))
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn"


def test_engine_tool_calls_are_tool_use_blocks() -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]
    events = run(plan(tools=[WEATHER, TIME]), [chunk("Checking."), chunk(tool_calls=calls), final()])
    message = sdk_message(events)
    assert Message.model_validate(accumulate(events)) == message
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first = message.content[1]
    assert first.type == "tool_use" and first.name == "get_weather" and first.input == {"city": "Paris"}
    assert first.id == "toolu_r1_0" and message.content[2].id == "toolu_r1_1"
    single = run(
        plan(tools=[WEATHER, TIME], tool_choice={"type": "auto", "disable_parallel_tool_use": True}),
        [final(tool_calls=calls)],
    )
    assert [b["type"] for b in accumulate(single)["content"]] == ["tool_use"]


def test_a_forced_answer_becomes_one_tool_use() -> None:
    named = plan(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    message = sdk_message(run(named, [chunk('{"city": '), chunk('"Paris"}'), final()]))
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    wrapped = plan(tools=[WEATHER, TIME], tool_choice={"type": "any"})
    chosen = accumulate(run(wrapped, [final(text='{"name": "get_time", "input": {}}')]))
    assert chosen["content"][0]["name"] == "get_time" and chosen["content"][0]["input"] == {}


def test_a_forced_answer_cut_short_is_text_with_max_tokens() -> None:
    named = plan(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})
    message = accumulate(run(named, [chunk('{"city": "Pa'), final("length")]))
    assert message["content"] == [{"type": "text", "text": '{"city": "Pa'}]
    assert message["stop_reason"] == "max_tokens"
    wrong = plan(tools=[WEATHER, TIME], tool_choice={"type": "any"})
    assert accumulate(run(wrong, [final(text='{"name": "other", "input": {}}')]))["stop_reason"] == "end_turn"


def test_the_stop_scanner_matches_across_pieces_and_holds_back_only_a_possible_start() -> None:
    scanner = StopScanner(("STOP", "\n\n"))
    assert scanner.push("one ST") == ("one ", None)
    assert scanner.push("AR two S") == ("STAR two ", None)
    assert scanner.push("TO") == ("", None)
    assert scanner.push("P three") == ("", "STOP")
    first = StopScanner(("bb", "ab"))
    assert first.push("xabb") == ("x", "ab"), "the earliest match wins"
    tail = StopScanner(("END",))
    assert tail.push("the E") == ("the ", None)
    assert tail.flush() == "E"


def test_a_stop_sequence_cuts_the_answer_and_names_itself() -> None:
    converter = MessageEvents(plan(stop_sequences=["\n\nUser:"]), "msg_r1")
    events = converter.feed(chunk("Sure.\n"))
    events += converter.feed(chunk("\nUser: more"))
    assert converter.cut == "\n\nUser:" and not converter.done
    assert converter.feed(chunk("ignored")) == []
    events += converter.finish(input_tokens=11)
    message = sdk_message(events)
    assert message.content[0].type == "text" and message.content[0].text == "Sure."
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "\n\nUser:"
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 2
    assert Message.model_validate(accumulate(events)) == message


def test_a_held_back_tail_is_released_when_the_answer_ends_without_a_match() -> None:
    message = accumulate(run(plan(stop_sequences=["END"]), [chunk("The E"), final()]))
    assert message["content"] == [{"type": "text", "text": "The E"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None


def test_events_are_written_as_named_sse_events() -> None:
    assert sse(("message_stop", {"type": "message_stop"})) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidRequest("x"), 400, "invalid_request_error"),
        (Unauthorized("x"), 401, "authentication_error"),
        (Forbidden("x"), 403, "permission_error"),
        (ModelNotFound("x"), 404, "not_found_error"),
        (RequestTooLarge("x"), 413, "request_too_large"),
        (TenantBusy("x"), 429, "rate_limit_error"),
        (QueueFull("x"), 529, "overloaded_error"),
        (RequestTimeout("x"), 503, "api_error"),
        (BackendUnavailable("x"), 503, "api_error"),
        (BackendError("x"), 502, "api_error"),
        (InternalError("x"), 500, "api_error"),
    ],
)
def test_errors_take_anthropics_types_and_statuses(error: SharedOllamaError, status: int, kind: str) -> None:
    got_status, body = error_status_and_body(error, "req-1")
    assert got_status == status
    assert body["type"] == "error" and body["request_id"] == "req-1"
    assert body["error"]["type"] == kind and body["error"]["message"] == "x"
    assert ("retry_after" in body["error"]) == (error.status in (429, 503))
    assert orjson.loads(orjson.dumps(body)) == body
