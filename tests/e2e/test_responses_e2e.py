"""The Responses API end to end: the official ``openai`` SDK against the real gateway, engine and SmolLM2.

Created and streamed responses, structured output, a conversation continued on the server, the stored responses
(retrieve, input items, delete, another tenant's 404), refused fields, a function tool round trip, truncation with
the model's own tokenizer, and images through the image pipeline to the tiny vision model.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from PIL import Image
from pydantic import BaseModel

from shared_ollama.engine.tiny_vision import IMAGE_TOKENS, TINY_VISION_NAME
from tests.e2e.conftest import start_gateway
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

MODEL = "smollm2:135m"
QUESTION = "What is the capital of France?"
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Berlin"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": CITY_SCHEMA,
    "strict": True,
}


def client(url: str, tenant: str = "responses-e2e") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=120,
        default_headers={"X-Shared-Ollama-Project": tenant},
    )


@pytest.fixture(scope="module")
def sdk(gateway_url: str) -> openai.OpenAI:
    return client(gateway_url)


def test_create_answers_with_output_text(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model=MODEL, input=QUESTION, instructions="Answer briefly.", max_output_tokens=16, temperature=0
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None and response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 16
    if response.status == "incomplete":  # cut by max_output_tokens: it says so
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage.output_tokens == 16
    assert response.instructions == "Answer briefly." and response.max_output_tokens == 16


def test_stream_sends_the_events_in_order_and_the_final_response(sdk: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA, "strict": True}
    with sdk.responses.stream(
        model=MODEL, input=QUESTION, text={"format": fmt}, max_output_tokens=64, temperature=0
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[4 : 4 + len(deltas)] == ["response.output_text.delta"] * len(deltas) and deltas
    assert kinds[4 + len(deltas) :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(d.delta for d in deltas) == final.output_text
    assert final.status == "completed" and final.id == events[0].response.id  # type: ignore[union-attr]
    assert json.loads(final.output_text)["city"] in ("Paris", "Rome", "Berlin")


class Capital(BaseModel):
    city: Literal["Paris", "Rome", "Berlin"]
    is_capital: bool


def test_structured_output_parses_and_matches_the_schema(sdk: openai.OpenAI) -> None:
    parsed = sdk.responses.parse(model=MODEL, input=QUESTION, text_format=Capital, max_output_tokens=64, temperature=0)
    assert parsed.status == "completed"
    answer = parsed.output_parsed
    assert isinstance(answer, Capital)
    assert Capital.model_validate_json(parsed.output_text) == answer
    raw = sdk.responses.create(
        model=MODEL,
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA}},
        max_output_tokens=64,
        temperature=0,
    )
    assert set(json.loads(raw.output_text)) == {"city"}
    assert raw.text is not None and raw.text.format.type == "json_schema"


def test_previous_response_id_continues_the_conversation_on_the_server(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8, temperature=0)
    follow = "What is my name?"
    second = sdk.responses.create(
        model=MODEL, input=follow, previous_response_id=first.id, max_output_tokens=8, temperature=0
    )
    alone = sdk.responses.create(model=MODEL, input=follow, max_output_tokens=8, temperature=0, store=False)
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None and alone.usage is not None
    # the engine read the first turn (its question and its answer) before the second one
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens + 3
    items = sdk.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]  # only the second request's own input
    third = sdk.responses.create(
        model=MODEL, input="And again?", previous_response_id=second.id, max_output_tokens=8, temperature=0
    )
    assert third.usage is not None and third.usage.input_tokens > second.usage.input_tokens


def test_retrieve_and_delete_a_stored_response(sdk: openai.OpenAI) -> None:
    created = sdk.responses.create(model=MODEL, input=QUESTION, max_output_tokens=8, metadata={"ticket": "42"})
    got = sdk.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == created.output_text and got.metadata == {"ticket": "42"}
    assert sdk.responses.input_items.list(created.id).data[0].content[0].text == QUESTION  # type: ignore[union-attr]
    sdk.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(created.id)
    unstored = sdk.responses.create(model=MODEL, input=QUESTION, max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_another_tenants_response_is_a_404(sdk: openai.OpenAI, gateway_url: str) -> None:
    mine = sdk.responses.create(model=MODEL, input=QUESTION, max_output_tokens=4)
    other = client(gateway_url, tenant="someone-else")
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.retrieve(mine.id)
    assert info.value.body["code"] == "not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model=MODEL, input="Go on.", previous_response_id=mine.id, max_output_tokens=4)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    assert sdk.responses.retrieve(mine.id).id == mine.id


@pytest.mark.parametrize(
    ("field", "value"),
    [("reasoning", {"effort": "low"}), ("background", True), ("include", ["message.output_text.logprobs"])],
)
def test_a_field_nothing_honours_is_refused_by_name(sdk: openai.OpenAI, field: str, value: object) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model=MODEL, input=QUESTION, max_output_tokens=4, **{field: value})  # type: ignore[call-overload]
    assert info.value.body["param"] == field  # type: ignore[index]


def test_a_function_tool_round_trip(sdk: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    choice = {"type": "function", "name": "get_weather"}
    with sdk.responses.stream(
        model=MODEL, input=ask, tools=[WEATHER_TOOL], tool_choice=choice, max_output_tokens=32, store=False
    ) as stream:
        kinds = [event.type for event in stream]
        called = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    call = called.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments)["city"] in ("Paris", "Rome", "Berlin")
    # the client keeps the state: the call it got back (the SDK's own object, as OpenAI's guide passes it),
    # then its result
    answered = sdk.responses.create(
        model=MODEL,
        input=[*ask, call, {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],
        max_output_tokens=16,
        store=False,
    )
    assert answered.output[0].type == "message" and answered.output_text.strip()
    # or the server keeps it: the result answers the call of the previous response
    stored = sdk.responses.create(
        model=MODEL, input=ask, tools=[WEATHER_TOOL], tool_choice="required", max_output_tokens=32
    )
    stored_call = stored.output[0]
    assert stored_call.type == "function_call"
    result = {"type": "function_call_output", "call_id": stored_call.call_id, "output": "Rainy, 12 C"}
    follow = sdk.responses.create(model=MODEL, input=[result], previous_response_id=stored.id, max_output_tokens=16)  # type: ignore[list-item]
    assert follow.output_text.strip()
    assert follow.usage is not None and stored.usage is not None
    assert follow.usage.input_tokens > stored.usage.input_tokens


def test_truncation_auto_drops_the_oldest_turns_of_a_prompt_over_the_limit(sdk: openai.OpenAI) -> None:
    long = [
        {"role": "user", "content": "Remember this: " + "apple banana cherry " * 1500},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Say hello."},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model=MODEL, input=long, max_output_tokens=4)  # type: ignore[arg-type]
    assert info.value.body["code"] == "prompt_too_large"  # type: ignore[index]
    response = sdk.responses.create(model=MODEL, input=long, truncation="auto", max_output_tokens=4)  # type: ignore[arg-type]
    assert response.truncation == "auto" and response.usage is not None
    assert response.usage.input_tokens < 100  # the long turn is gone, the rest is there


# ---------------------------------------------------------------- images, through the image pipeline


@pytest.fixture(scope="module")
def vision_gateway(vision_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = start_gateway(
        vision_store, tmp_path_factory.mktemp("gw-responses-vision"), artifacts_dir / "gateway-responses-vision.log"
    )
    try:
        yield url
    finally:
        stop(proc)


def picture(side: int = 1200) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(buffer, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_an_input_image_reaches_the_vision_model_through_the_image_pipeline(vision_gateway: str) -> None:
    sdk = client(vision_gateway)
    text = {"type": "input_text", "text": "What is in the picture?"}
    plain = sdk.responses.create(
        model=TINY_VISION_NAME, input=[{"role": "user", "content": [text]}], max_output_tokens=2, store=False
    )
    image = {"type": "input_image", "image_url": picture(), "detail": "low"}
    raw = sdk.responses.with_raw_response.create(
        model=TINY_VISION_NAME, input=[{"role": "user", "content": [text, image]}], max_output_tokens=2, store=False
    )
    seen = raw.parse()
    assert plain.usage is not None and seen.usage is not None
    assert seen.usage.input_tokens == plain.usage.input_tokens + IMAGE_TOKENS
    assert "1200x1200->512x512" in raw.headers["X-Shared-Ollama-Images"]  # detail: low is 512 px
    with pytest.raises(openai.BadRequestError) as info:  # a model that cannot see is told so, by name
        sdk.responses.create(model=MODEL, input=[{"role": "user", "content": [text, image]}], max_output_tokens=2)
    assert info.value.body["param"] == "model"  # type: ignore[index]
