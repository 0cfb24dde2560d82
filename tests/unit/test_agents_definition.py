"""The agents' request bodies: an agent's definition and a run's request, each refusing what it does not know."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared_ollama.service.agents.definition import AgentDefinition, RunRequest

JsonDict = dict[str, Any]


def refused(model: type[AgentDefinition] | type[RunRequest], body: JsonDict) -> list[tuple[Any, ...]]:
    """The locations of what ``body`` gets wrong."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [error["loc"] for error in caught.value.errors()]


# --- AgentDefinition


def test_a_minimal_definition_takes_the_defaults_and_is_stored_without_its_name() -> None:
    agent = AgentDefinition.model_validate({"name": "helper", "model": "smollm2:135m"})
    assert agent.stored() == {
        "model": "smollm2:135m",
        "system": None,
        "description": None,
        "tools": [],
        "max_steps": 8,
        "options": {},
        "tool_choice": "auto",
        "tool_mode": "auto",
    }


def test_an_update_body_may_leave_the_name_out() -> None:
    assert AgentDefinition.model_validate({"model": "m", "tools": ["calculator"]}).name is None


@pytest.mark.parametrize("field", ["temperature", "stream", "tool"])
def test_an_unknown_field_is_refused_by_name(field: str) -> None:
    assert refused(AgentDefinition, {"name": "helper", "model": "m", field: 1}) == [(field,)]


@pytest.mark.parametrize("name", ["", "-helper", ".helper", "my helper", "help/er", "hélène", "a" * 65])
def test_a_bad_name_is_refused(name: str) -> None:
    assert refused(AgentDefinition, {"name": name, "model": "m"}) == [("name",)]


@pytest.mark.parametrize("name", ["a", "Helper-2", "team.helper_v1", "0" + "a" * 63])
def test_good_names(name: str) -> None:
    assert AgentDefinition.model_validate({"name": name, "model": "m"}).name == name


def test_a_tool_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="tools must not repeat a name"):
        AgentDefinition.model_validate({"name": "helper", "model": "m", "tools": ["calculator", "calculator"]})
    assert AgentDefinition.model_validate({"model": "m", "tools": ["calculator", "current_time"]}).tools == [
        "calculator",
        "current_time",
    ]


@pytest.mark.parametrize(("steps", "ok"), [(0, False), (-1, False), (1, True), (8, True)])
def test_max_steps_is_at_least_one(steps: int, ok: bool) -> None:
    body = {"name": "helper", "model": "m", "max_steps": steps}
    if ok:
        assert AgentDefinition.model_validate(body).max_steps == steps
    else:
        assert refused(AgentDefinition, body) == [("max_steps",)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("tool_choice", "none"), ("tool_mode", "json"), ("model", ""), ("tools", "calculator"), ("options", [])],
)
def test_out_of_range_values_are_refused_by_field(field: str, value: object) -> None:
    assert refused(AgentDefinition, {"name": "helper", "model": "m", field: value})[0][0] == field


# --- RunRequest


def test_input_is_one_user_turn() -> None:
    assert RunRequest.model_validate({"input": "What is 6*7?"}).new_messages() == [
        {"role": "user", "content": "What is 6*7?"}
    ]


def test_messages_are_the_turns_as_given() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "6*7?"},
    ]
    assert RunRequest.model_validate({"messages": messages}).new_messages() == messages


@pytest.mark.parametrize(
    "body",
    [{}, {"stream": True}, {"input": "Hi", "messages": [{"role": "user", "content": "Hi"}]}],
)
def test_exactly_one_of_input_and_messages(body: JsonDict) -> None:
    request = RunRequest.model_validate(body)
    with pytest.raises(ValueError, match="exactly one of 'input'"):
        request.new_messages()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"input": ""}, ("input",)),
        ({"messages": []}, ("messages",)),
        ({"messages": [{"role": "tool", "content": "x"}]}, ("messages", 0, "role")),
        ({"messages": [{"role": "user", "content": "x", "images": []}]}, ("messages", 0, "images")),
        ({"input": "Hi", "max_steps": 0}, ("max_steps",)),
        ({"input": "Hi", "model": "other"}, ("model",)),
    ],
)
def test_a_bad_run_request_is_refused_by_field(body: JsonDict, where: tuple[Any, ...]) -> None:
    assert refused(RunRequest, body) == [where]


@pytest.mark.parametrize("session", ["ses_0123456789abcdef0123", "team.a:chat-1", "x", "s" * 128])
def test_good_session_ids(session: str) -> None:
    assert RunRequest.model_validate({"input": "Hi", "session": session}).session == session


@pytest.mark.parametrize("session", ["", "a b", "../etc", "s" * 129, "ses\n1", "sés"])
def test_a_bad_session_id_is_refused(session: str) -> None:
    assert refused(RunRequest, {"input": "Hi", "session": session}) == [("session",)]
