"""Grammar-mode prompting: the decision's JSON schema, what a decision and an answer step show the model (the facts
since the last user turn), and how a decision's JSON reads."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from shared_ollama.service.agents.prompting import (
    ANSWER,
    answer_messages,
    decision_messages,
    decision_schema,
    read_decision,
)
from shared_ollama.service.agents.tooling import ToolSpec

JsonDict = dict[str, Any]
SEARCH = ToolSpec(
    "search",
    "Search the notes.",
    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
CLOCK = ToolSpec("clock", "The time.", {})
EMPTY = {"type": "object", "properties": {}}


def option(name: str, parameters: JsonDict) -> JsonDict:
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "enum": [name]}, "arguments": parameters},
        "required": ["name", "arguments"],
    }


def call(name: str, arguments: JsonDict) -> JsonDict:
    return {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": arguments}}]}


def result(name: str, content: str) -> JsonDict:
    return {"role": "tool", "tool_name": name, "content": content}


# --- decision_schema


def test_a_single_tool_without_answer_is_a_plain_object() -> None:
    assert decision_schema([SEARCH], may_answer=False) == option("search", SEARCH.parameters)


def test_may_answer_adds_the_answer_option() -> None:
    assert decision_schema([SEARCH], may_answer=True) == {
        "anyOf": [option("search", SEARCH.parameters), option(ANSWER, EMPTY)]
    }
    assert ANSWER == "answer"


def test_several_tools_are_any_of_in_order_and_a_tool_without_parameters_takes_an_empty_object() -> None:
    assert decision_schema([SEARCH, CLOCK], may_answer=False) == {
        "anyOf": [option("search", SEARCH.parameters), option("clock", EMPTY)]
    }


@pytest.mark.parametrize(
    ("decision", "may_answer", "valid"),
    [
        ({"name": "search", "arguments": {"query": "q"}}, False, True),
        ({"name": "search", "arguments": {}}, False, False),
        ({"name": "answer", "arguments": {}}, False, False),
        ({"name": "answer", "arguments": {}}, True, True),
        ({"name": "rm", "arguments": {}}, True, False),
        ({"name": "clock"}, True, False),
    ],
)
def test_the_schema_admits_exactly_the_allowed_decisions(decision: JsonDict, may_answer: bool, valid: bool) -> None:
    validator = Draft202012Validator(decision_schema([SEARCH, CLOCK], may_answer=may_answer))
    assert validator.is_valid(decision) is valid


# --- what the model is shown


CONVERSATION = [
    {"role": "user", "content": "Find the launch date."},
    call("search", {"query": "launch"}),
    result("search", "March 3"),
    {"role": "assistant", "content": "It is March 3."},
    {"role": "user", "content": "And the budget?"},
    call("search", {"query": "budget"}),
    result("search", "12 000 EUR"),
    call("clock", {}),
    result("clock", "10:00"),
]
TURNS = [
    {"role": "user", "content": "Find the launch date."},
    {"role": "assistant", "content": "It is March 3."},
    {"role": "user", "content": "And the budget?"},
]


def test_the_answer_step_shows_only_the_facts_since_the_last_user_turn() -> None:
    system, *turns = answer_messages("Be brief.", CONVERSATION)
    assert system == {
        "role": "system",
        "content": (
            "Be brief.\n\nFacts from tools:\n"
            '- search({"query":"budget"}) = 12 000 EUR\n'
            "- clock({}) = 10:00\n"
            "Answer using these facts."
        ),
    }
    assert "March 3" not in system["content"]
    assert turns == TURNS


def test_an_answer_without_facts_has_only_the_agents_system() -> None:
    assert answer_messages("Be brief.", TURNS) == [{"role": "system", "content": "Be brief."}, *TURNS]
    assert answer_messages(None, TURNS[:1]) == [{"role": "system", "content": ""}, *TURNS[:1]]


def test_a_decision_shows_the_tools_how_to_call_and_the_results_so_far() -> None:
    system, *turns = decision_messages("Be brief.", [SEARCH, CLOCK], CONVERSATION)
    content = system["content"]
    assert content.startswith("Be brief.\n\nYou can call these tools: ")
    listed = orjson.loads(content.split("You can call these tools: ", 1)[1].split("\n", 1)[0])
    assert listed == [
        {"name": "search", "description": "Search the notes.", "parameters": SEARCH.parameters},
        {"name": "clock", "description": "The time.", "parameters": {}},
    ]
    assert '{"name": "answer", "arguments": {}}' in content
    assert content.endswith(
        'Results of the tools called so far:\n- search({"query":"budget"}) = 12 000 EUR\n- clock({}) = 10:00'
    )
    assert "March 3" not in content
    assert turns == TURNS


def test_a_first_decision_has_no_results_section() -> None:
    [system, turn] = decision_messages(None, [SEARCH], TURNS[:1])
    assert system["content"].startswith("You can call these tools: ")
    assert "Results of the tools" not in system["content"]
    assert turn == TURNS[0]


def test_a_system_message_of_the_run_reaches_the_grammar_steps() -> None:
    conversation = [{"role": "system", "content": "Reply in French."}, {"role": "user", "content": "Hello"}]
    for messages in (answer_messages("Be brief.", conversation), decision_messages(None, [SEARCH], conversation)):
        assert "Reply in French." in orjson.dumps(messages).decode()


# --- read_decision


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "search", "arguments": {"query": "budget"}}', ("search", {"query": "budget"})),
        ('{"name": "clock", "arguments": {}}', ("clock", {})),
        ('{"name": "answer", "arguments": {}}', None),
        ('{"name": "rm", "arguments": {"path": "/"}}', None),
        ('{"name": "search", "arguments": {"query": "bud', None),
        ("", None),
        ("search(budget)", None),
        ('{"name": "search", "arguments": ["budget"]}', None),
        ('{"name": "search", "arguments": "budget"}', None),
        ('{"name": "search", "arguments": null}', None),
        ('["search", {"query": "budget"}]', None),
        ('"search"', None),
    ],
)
def test_read_decision(content: str, expected: tuple[str, JsonDict] | None) -> None:
    assert read_decision(content, [SEARCH, CLOCK]) == expected


def test_answer_means_ready_to_answer_even_beside_a_tool_of_that_name() -> None:
    tools = [SEARCH, ToolSpec(ANSWER, "A tool named like the pseudo-tool.", {})]
    assert read_decision('{"name": "answer", "arguments": {}}', tools) is None


@pytest.mark.parametrize("name", ['["search"]', '{"tool": "search"}'])
def test_a_decision_whose_name_is_not_a_string_is_no_decision(name: str) -> None:
    assert read_decision(f'{{"name": {name}, "arguments": {{}}}}', [SEARCH]) is None
