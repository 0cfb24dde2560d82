"""The agents facade's pure parts: the tools a run offers when one is gone for the moment, and a session's history
bounded from a user turn."""

from __future__ import annotations

import asyncio
from typing import Any

from shared_ollama.service.agents.agents import Agents, _recent_turns
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import ToolContext, ToolOutcome, ToolSpec

SPEC = ToolSpec("notes__add", "Add", {"type": "object", "properties": {"a": {"type": "integer"}}})


class Provider:
    def __init__(self) -> None:
        self.up = True

    def specs(self, tenant: str) -> list[ToolSpec]:
        return [SPEC] if self.up else []

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        return ToolOutcome("3")


def test_a_tool_gone_for_the_moment_stays_offered_and_calling_it_is_a_tool_error() -> None:
    provider = Provider()
    toolbox = ToolBox([provider], timeout=1.0, max_chars=100)
    agents = Agents.__new__(Agents)  # only the toolbox is used here
    agents.toolbox = toolbox
    assert agents._tools_now("t", ["notes__add"]) == [SPEC]
    provider.up = False
    [placeholder] = agents._tools_now("t", ["notes__add"])
    assert placeholder.name == "notes__add" and placeholder.source == "unavailable"
    outcome = asyncio.run(toolbox.run("t", "notes__add", {}, ToolContext("t", "agent")))
    assert outcome.error and "notes__add" in outcome.content


def test_a_long_session_keeps_its_latest_turns_from_a_user_turn_on() -> None:
    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x", "arguments": {}}}]},
        {"role": "tool", "content": "r1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert _recent_turns(history, 10) == history
    assert _recent_turns(history, 4) == history[4:], "never from a tool result whose call was cut off"
    assert _recent_turns(history, 2) == history[4:]
    assert _recent_turns(history, 1) == []
