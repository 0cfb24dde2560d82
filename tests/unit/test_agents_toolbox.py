"""The toolbox: tools by name across providers, schema checks before a tool runs, the time limit, the result
cap, failures as outcomes; cancellation still reaches the tool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import ToolContext, ToolOutcome, ToolSpec

CTX = ToolContext(tenant="acme", agent="helper")
SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["query"],
    "additionalProperties": False,
}

Behaviour = Callable[[str, dict[str, Any]], Awaitable[Any]]


class FakeProvider:
    """Tools named in ``names`` (for ``tenants``, or everyone), each answering with ``behaviour``."""

    def __init__(
        self, names: list[str], behaviour: Behaviour, *, source: str = "builtin", tenants: set[str] | None = None
    ) -> None:
        self.names = names
        self.behaviour = behaviour
        self.source = source
        self.tenants = tenants
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def specs(self, tenant: str) -> list[ToolSpec]:
        if self.tenants is not None and tenant not in self.tenants:
            return []
        return [ToolSpec(name, f"the {name} tool", SCHEMA, self.source) for name in self.names]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        self.calls.append((name, arguments))
        return await self.behaviour(name, arguments)


def answering(content: str, **meta: Any) -> Behaviour:
    async def behaviour(name: str, arguments: dict[str, Any]) -> ToolOutcome:
        return ToolOutcome(content, meta=dict(meta))

    return behaviour


def box(*providers: FakeProvider, timeout: float = 5.0, max_chars: int = 1000, **kwargs: Any) -> ToolBox:
    return ToolBox(providers, timeout=timeout, max_chars=max_chars, **kwargs)


async def test_a_valid_call_runs_the_tool_and_times_it() -> None:
    provider = FakeProvider(["search"], answering("found", hits=2))
    ticks = iter([10.0, 12.5])
    outcome = await box(provider, monotonic=lambda: next(ticks)).run("acme", "search", {"query": "q", "k": 2}, CTX)
    assert provider.calls == [("search", {"query": "q", "k": 2})]
    assert outcome == ToolOutcome("found", meta={"hits": 2, "seconds": 2.5})


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"k": 2}, "invalid arguments for search: 'query' is a required property"),
        ({"query": "q", "k": 11}, "invalid arguments for search: at k: 11 is greater than the maximum of 10"),
        ({"query": "q", "k": "2"}, "invalid arguments for search: at k: '2' is not of type 'integer'"),
        ({"query": "q", "x": 1}, "invalid arguments for search: Additional properties are not allowed"),
        (["q"], "invalid arguments for search: they must be a JSON object"),
        ('{"query": "q"}', "invalid arguments for search: they must be a JSON object"),
        (None, "invalid arguments for search: they must be a JSON object"),
    ],
)
async def test_arguments_that_break_the_schema_are_an_error_and_the_tool_never_runs(
    arguments: object, words: str
) -> None:
    provider = FakeProvider(["search"], answering("found"))
    outcome = await box(provider).run("acme", "search", arguments, CTX)
    assert outcome.error is True
    assert outcome.content.startswith(words)
    assert provider.calls == []


async def test_a_long_validation_message_is_cut() -> None:
    provider = FakeProvider(["search"], answering("found"))
    outcome = await box(provider).run("acme", "search", {"query": ["x" * 1000]}, CTX)
    assert outcome.error is True
    assert len(outcome.content) < 300


async def test_an_unknown_or_unavailable_tool_is_an_error_outcome() -> None:
    provider = FakeProvider(["search"], answering("found"), tenants={"acme"})
    toolbox = box(provider)
    unknown = await toolbox.run("acme", "nope", {}, CTX)
    assert (unknown.error, unknown.content) == (True, "unknown tool 'nope': it is not available to this agent")
    other_tenant = await toolbox.run("globex", "search", {"query": "q"}, CTX)
    assert other_tenant.error is True
    assert provider.calls == []


async def test_a_tool_that_never_answers_times_out_and_is_cancelled() -> None:
    never = asyncio.Event()
    cancelled: list[bool] = []

    async def hang(name: str, arguments: dict[str, Any]) -> ToolOutcome:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return ToolOutcome("unreachable")

    outcome = await box(FakeProvider(["search"], hang), timeout=0.05).run("acme", "search", {"query": "q"}, CTX)
    assert (outcome.error, outcome.content) == (True, "search timed out after 0.05 s")
    assert cancelled == [True]


async def test_a_tool_raising_its_own_timeout_error_is_not_reported_as_the_limit() -> None:
    async def own_timeout(name: str, arguments: dict[str, Any]) -> ToolOutcome:
        raise TimeoutError("upstream")

    outcome = await box(FakeProvider(["search"], own_timeout)).run("acme", "search", {"query": "q"}, CTX)
    assert (outcome.error, outcome.content) == (True, "search failed (TimeoutError)")


async def test_cancelling_the_run_cancels_the_tool_and_propagates() -> None:
    entered = asyncio.Event()
    never = asyncio.Event()
    cancelled: list[bool] = []

    async def hang(name: str, arguments: dict[str, Any]) -> ToolOutcome:
        entered.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return ToolOutcome("unreachable")

    task = asyncio.create_task(box(FakeProvider(["search"], hang)).run("acme", "search", {"query": "q"}, CTX))
    await asyncio.wait_for(entered.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]


async def test_an_exception_becomes_an_outcome_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def crash(name: str, arguments: dict[str, Any]) -> ToolOutcome:
        raise RuntimeError("secret internal detail")

    with caplog.at_level(logging.WARNING, logger="shared_ollama.service.agents.toolbox"):
        outcome = await box(FakeProvider(["search"], crash)).run("acme", "search", {"query": "q"}, CTX)
    assert (outcome.error, outcome.content) == (True, "search failed (RuntimeError)")
    assert "seconds" in outcome.meta
    assert any(record.exc_info for record in caplog.records)


async def test_a_provider_returning_something_else_is_an_error_outcome() -> None:
    async def wrong(name: str, arguments: dict[str, Any]) -> Any:
        return "plain string"

    outcome = await box(FakeProvider(["search"], wrong)).run("acme", "search", {"query": "q"}, CTX)
    assert (outcome.error, outcome.content) == (True, "search failed (no result)")


async def test_a_long_result_is_capped_with_a_marker() -> None:
    long = box(FakeProvider(["search"], answering("x" * 150)), max_chars=100)
    outcome = await long.run("acme", "search", {"query": "q"}, CTX)
    assert outcome.content == "x" * 100 + "\n[truncated: 50 more characters]"
    assert outcome.meta["truncated"] is True
    exact = box(FakeProvider(["search"], answering("x" * 100)), max_chars=100)
    fits = await exact.run("acme", "search", {"query": "q"}, CTX)
    assert fits.content == "x" * 100
    assert "truncated" not in fits.meta


def test_specs_take_each_name_once_first_provider_first_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    first = FakeProvider(["search", "fetch"], answering("1"))
    second = FakeProvider(["search", "other", "bad name!"], answering("2"), source="mcp:docs")
    toolbox = box(first, second)
    with caplog.at_level(logging.WARNING, logger="shared_ollama.service.agents.toolbox"):
        for _ in range(3):
            specs = toolbox.specs("acme")
    assert [(spec.name, spec.source) for spec in specs] == [
        ("search", "builtin"),
        ("fetch", "builtin"),
        ("other", "mcp:docs"),
    ]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "'search' from mcp:docs" in warnings[0]


async def test_the_first_provider_answers_a_shared_name() -> None:
    first = FakeProvider(["search"], answering("first"))
    second = FakeProvider(["search"], answering("second"), source="mcp:docs")
    outcome = await box(first, second).run("acme", "search", {"query": "q"}, CTX)
    assert outcome.content == "first"
    assert second.calls == []


def test_resolve_returns_the_tools_in_order() -> None:
    toolbox = box(FakeProvider(["a", "b", "c"], answering("")))
    assert [spec.name for spec in toolbox.resolve("acme", ["c", "a"])] == ["c", "a"]
    assert toolbox.resolve("acme", []) == []


def test_resolve_names_every_unknown_tool_in_a_400() -> None:
    toolbox = box(FakeProvider(["a", "b"], answering(""), tenants={"acme"}))
    with pytest.raises(InvalidRequest) as caught:
        toolbox.resolve("acme", ["a", "nope", "b", "zilch"])
    assert caught.value.status == 400
    assert caught.value.param == "tools"
    assert caught.value.message == "unknown tools: nope, zilch (available: a, b)"
    with pytest.raises(InvalidRequest, match=r"unknown tools: a \(available: none\)"):
        toolbox.resolve("globex", ["a"])


def test_resolve_refuses_a_tool_listed_twice() -> None:
    toolbox = box(FakeProvider(["a", "b"], answering("")))
    with pytest.raises(InvalidRequest, match="tools listed more than once: a") as caught:
        toolbox.resolve("acme", ["a", "b", "a"])
    assert caught.value.param == "tools"
