"""The agent loop with a scripted model (``StepModel``) and a real toolbox: native and grammar steps, tool calls and
their results, usage, the step and time limits, model errors and cancellation. The real engine's side of the same
loop is in tests/e2e/test_agents_e2e.py."""

from __future__ import annotations

import asyncio
import copy
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from shared_ollama.errors import BackendError, QueueFull
from shared_ollama.service.agents.loop import DECISION_TOKENS, AgentLoop, RunPlan
from shared_ollama.service.agents.prompting import decision_messages, decision_schema
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import ToolContext, ToolOutcome, ToolSpec
from shared_ollama.service.agents.tools import calculator
from shared_ollama.service.agents.tools.builtin import BuiltinTools

JsonDict = dict[str, Any]
Item = JsonDict | asyncio.Event | BaseException | Callable[[], None]
"""One thing a scripted stream does: yield a chunk, wait for an event, raise, or call back (e.g. move the clock)."""

CTX = ToolContext(tenant="acme", agent="helper")
CALC = calculator.SPEC
BOUND = 5.0
"""Seconds any one test waits on the loop: a hang fails the test instead of blocking the suite."""
QUESTION = {"role": "user", "content": "What is 6*7?"}


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedModel:
    """A ``StepModel``: ``call`` answers from ``answers``, ``stream`` plays ``streams``; every body is recorded."""

    def __init__(
        self,
        *,
        answers: list[JsonDict | BaseException] | None = None,
        streams: list[list[Item]] | None = None,
        enter_gate: asyncio.Event | None = None,
    ) -> None:
        self.answers = list(answers or [])
        self.streams = list(streams or [])
        self.enter_gate = enter_gate
        """Entering a stream waits for this (a request waiting for admission)."""
        self.bodies: list[tuple[str, JsonDict]] = []
        self.stream_exits: list[str] = []
        """How each stream context ended: ``ok`` or the exception's type name."""

    def calls(self) -> list[JsonDict]:
        return [body for kind, body in self.bodies if kind == "call"]

    def streamed(self) -> list[JsonDict]:
        return [body for kind, body in self.bodies if kind == "stream"]

    async def call(self, body: JsonDict) -> JsonDict:
        self.bodies.append(("call", copy.deepcopy(body)))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @asynccontextmanager
    async def stream(self, body: JsonDict) -> AsyncIterator[AsyncIterator[JsonDict]]:
        self.bodies.append(("stream", copy.deepcopy(body)))
        script = self.streams.pop(0)
        if self.enter_gate is not None:
            await self.enter_gate.wait()
        try:
            yield _play(script)
        except BaseException as exc:
            self.stream_exits.append(type(exc).__name__)
            raise
        self.stream_exits.append("ok")


async def _play(script: list[Item]) -> AsyncIterator[JsonDict]:
    for item in script:
        if isinstance(item, asyncio.Event):
            await item.wait()
        elif isinstance(item, BaseException):
            raise item
        elif callable(item):
            item()
        else:
            yield item


def finished(prompt: int = 0, completion: int = 0) -> JsonDict:
    return {
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": prompt,
        "eval_count": completion,
    }


def piece(text: str) -> JsonDict:
    return {"message": {"role": "assistant", "content": text}, "done": False}


def said(*pieces: str, prompt: int = 0, completion: int = 0) -> list[Item]:
    """A streamed native answer in ``pieces``."""
    chunks: list[Item] = [piece(p) for p in pieces]
    return [*chunks, finished(prompt, completion)]


def calling(*calls: tuple[str, JsonDict], prompt: int = 0, completion: int = 0) -> list[Item]:
    """A streamed native step whose chunk carries ``tool_calls``."""
    tool_calls = [{"function": {"name": name, "arguments": arguments}} for name, arguments in calls]
    chunk = {"message": {"role": "assistant", "content": "", "tool_calls": tool_calls}, "done": False}
    return [chunk, finished(prompt, completion)]


def decided(name: str = "", arguments: JsonDict | None = None, *, raw: str | None = None, **counts: int) -> JsonDict:
    """A non-streamed grammar decision (``raw``: its content as is)."""
    content = raw if raw is not None else orjson.dumps({"name": name, "arguments": arguments or {}}).decode()
    return {
        "message": {"role": "assistant", "content": content},
        "done": True,
        "prompt_eval_count": counts.get("prompt", 0),
        "eval_count": counts.get("completion", 0),
    }


Behaviour = Callable[[JsonDict], Awaitable[ToolOutcome]]


class FakeTools:
    """A tool provider: one tool per behaviour, taking any object."""

    def __init__(self, **behaviours: Behaviour) -> None:
        self.behaviours = behaviours
        self.calls: list[tuple[str, JsonDict]] = []

    def all(self) -> list[ToolSpec]:
        return self.specs(CTX.tenant)

    def specs(self, tenant: str) -> list[ToolSpec]:
        return [ToolSpec(name, f"the {name} tool", {"type": "object"}) for name in self.behaviours]

    async def call(self, name: str, arguments: JsonDict, ctx: ToolContext) -> ToolOutcome:
        self.calls.append((name, arguments))
        return await self.behaviours[name](arguments)


def hanging(entered: asyncio.Event, cancelled: list[bool]) -> Behaviour:
    """A tool that never answers; it notes its cancellation."""

    async def behaviour(arguments: JsonDict) -> ToolOutcome:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return ToolOutcome("unreachable")

    return behaviour


def make_loop(model: ScriptedModel, provider: Any = None, clock: Clock | None = None) -> AgentLoop:
    toolbox = ToolBox([provider or BuiltinTools()], timeout=60.0, max_chars=1000)
    return AgentLoop(model, toolbox, CTX, clock=clock or Clock())


def make_plan(tools: list[ToolSpec], *, deadline: float = 1e9, **fields: Any) -> RunPlan:
    fields.setdefault("grammar", False)
    fields.setdefault("max_steps", 4)
    return RunPlan(
        model="m", system="Be brief.", tools=tools, conversation=[dict(QUESTION)], deadline=deadline, **fields
    )


async def events_of(loop: AgentLoop, plan: RunPlan) -> list[JsonDict]:
    async with asyncio.timeout(BOUND):
        return [event async for event in loop.run(plan)]


def kinds(events: list[JsonDict]) -> list[str]:
    return [e["type"] for e in events]


def usage(prompt: int, completion: int, model_calls: int, tool_calls: int, tool_errors: int = 0) -> JsonDict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "model_calls": model_calls,
        "tool_calls": tool_calls,
        "tool_errors": tool_errors,
    }


# --- native mode


async def test_native_tool_call_runs_and_the_next_step_answers() -> None:
    model = ScriptedModel(
        streams=[
            calling(("calculator", {"expression": "6*7"}), prompt=10, completion=4),
            said("The answer", " is 42.", prompt=20, completion=6),
        ]
    )
    plan = make_plan([CALC])
    events = await events_of(make_loop(model), plan)

    assert kinds(events) == [
        "step_started",
        "tool_call",
        "tool_result",
        "step_started",
        "message_delta",
        "message_delta",
        "done",
    ]
    assert events[1] == {
        "type": "tool_call",
        "step": 1,
        "id": "call_1_0",
        "name": "calculator",
        "arguments": {"expression": "6*7"},
    }
    assert events[2] == {
        "type": "tool_result",
        "step": 1,
        "id": "call_1_0",
        "name": "calculator",
        "content": "42",
        "error": False,
    }
    done = events[-1]
    assert done["stopped"] == "done"
    assert done["output"] == "The answer is 42."
    assert "".join(e["content"] for e in events if e["type"] == "message_delta") == done["output"]
    assert done["usage"] == usage(prompt=30, completion=10, model_calls=2, tool_calls=1)
    assert "error" not in done
    call_message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "6*7"}}}],
    }
    tool_message = {"role": "tool", "tool_name": "calculator", "content": "42"}
    answer = {"role": "assistant", "content": "The answer is 42."}
    assert done["conversation"] == [QUESTION, call_message, tool_message, answer]
    assert model.streamed()[1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        QUESTION,
        call_message,
        tool_message,
    ]
    assert [(s["type"], s["step"]) for s in done["steps"]] == [("tool_call", 1), ("tool_result", 1), ("message", 2)]
    assert done["steps"][-1]["content"] == "The answer is 42."
    assert model.stream_exits == ["ok", "ok"]


async def test_failed_calls_are_results_the_model_sees_and_are_counted() -> None:
    model = ScriptedModel(
        streams=[calling(("calculator", {"expr": "1"}), ("nope", {})), said("I could not compute it.")]
    )
    done = (await events_of(make_loop(model), make_plan([CALC])))[-1]
    results = [s for s in done["steps"] if s["type"] == "tool_result"]
    assert [(r["name"], r["error"]) for r in results] == [("calculator", True), ("nope", True)]
    assert results[1]["content"] == "unknown tool 'nope': it is not available to this agent"
    assert done["usage"] == usage(prompt=0, completion=0, model_calls=2, tool_calls=2, tool_errors=2)
    tool_turns = [m for m in model.streamed()[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_name"] for m in tool_turns] == ["calculator", "nope"]
    assert done["stopped"] == "done"


async def test_two_calls_of_one_step_run_concurrently() -> None:
    a_running, b_running = asyncio.Event(), asyncio.Event()

    async def a(arguments: JsonDict) -> ToolOutcome:
        a_running.set()
        await b_running.wait()  # one after the other, this never returns
        return ToolOutcome("a done")

    async def b(arguments: JsonDict) -> ToolOutcome:
        b_running.set()
        await a_running.wait()
        return ToolOutcome("b done")

    tools = FakeTools(a=a, b=b)
    model = ScriptedModel(streams=[calling(("a", {}), ("b", {"x": 1})), said("Both done.")])
    events = await events_of(make_loop(model, tools), make_plan(tools.all()))
    results = [(e["id"], e["name"], e["content"], e["error"]) for e in events if e["type"] == "tool_result"]
    assert results == [("call_1_0", "a", "a done", False), ("call_1_1", "b", "b done", False)]
    assert tools.calls == [("a", {}), ("b", {"x": 1})]
    assert events[-1]["output"] == "Both done."


@pytest.mark.parametrize("with_tools", [True, False])
async def test_tools_go_in_ollama_format_only_when_the_agent_has_tools(with_tools: bool) -> None:
    model = ScriptedModel(streams=[said("Hello.")])
    plan = make_plan([CALC] if with_tools else [], options={"temperature": 0.5})
    await events_of(make_loop(model), plan)
    expected: JsonDict = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, QUESTION],
        "options": {"temperature": 0.5},
        "stream": True,
    }
    if with_tools:
        expected["tools"] = [
            {
                "type": "function",
                "function": {"name": "calculator", "description": CALC.description, "parameters": CALC.parameters},
            }
        ]
    assert model.streamed() == [expected]
    assert model.calls() == []


async def test_required_tool_choice_makes_the_first_native_step_a_grammar_decision() -> None:
    model = ScriptedModel(
        answers=[decided("calculator", {"expression": "6*7"}, prompt=7, completion=3)],
        streams=[said("42", prompt=5, completion=1)],
    )
    plan = make_plan([CALC], tool_choice="required")
    events = await events_of(make_loop(model), plan)
    assert [kind for kind, _ in model.bodies] == ["call", "stream"]
    first = model.calls()[0]
    assert first["format"] == decision_schema([CALC], may_answer=False)
    assert "tools" not in first
    assert first["stream"] is False
    assert "tools" in model.streamed()[0]  # later steps are the model's own
    assert kinds(events) == ["step_started", "tool_call", "tool_result", "step_started", "message_delta", "done"]
    assert events[2]["content"] == "42"
    assert events[-1]["usage"] == usage(prompt=12, completion=4, model_calls=2, tool_calls=1)


async def test_required_tool_choice_without_tools_is_a_plain_step() -> None:
    model = ScriptedModel(streams=[said("Hi.")])
    done = (await events_of(make_loop(model), make_plan([], tool_choice="required")))[-1]
    assert model.calls() == []
    assert done["output"] == "Hi."


async def test_an_unreadable_forced_native_decision_still_gets_an_answer() -> None:
    model = ScriptedModel(answers=[decided(raw='{"name": "calcul')], streams=[said("I cannot tell.")])
    done = (await events_of(make_loop(model), make_plan([CALC], tool_choice="required")))[-1]
    assert done["output"] == "I cannot tell."


# --- grammar mode


async def test_a_grammar_decision_is_greedy_short_and_constrained() -> None:
    model = ScriptedModel(answers=[decided("answer")], streams=[said("Nothing to compute.")])
    plan = make_plan([CALC], grammar=True)
    await events_of(make_loop(model), plan)
    assert model.calls() == [
        {
            "model": "m",
            "messages": decision_messages("Be brief.", [CALC], [QUESTION]),
            "options": {"num_predict": DECISION_TOKENS, "temperature": 0},
            "format": decision_schema([CALC], may_answer=True),
            "stream": False,
        }
    ]
    assert DECISION_TOKENS == 256


async def test_the_agents_own_options_win_over_the_decision_defaults() -> None:
    options = {"temperature": 0.7, "num_predict": 64, "top_k": 5}
    model = ScriptedModel(answers=[decided("answer")], streams=[said("Fine.")])
    plan = make_plan([CALC], grammar=True, options=dict(options))
    await events_of(make_loop(model), plan)
    assert model.calls()[0]["options"] == options
    assert model.streamed()[0]["options"] == options
    assert plan.options == options


async def test_grammar_call_then_answer_step_with_the_facts() -> None:
    model = ScriptedModel(
        answers=[
            decided("calculator", {"expression": "6*7"}, prompt=50, completion=9),
            decided("answer", prompt=60, completion=5),
        ],
        streams=[said("It is ", "42.", prompt=40, completion=4)],
    )
    plan = make_plan([CALC], grammar=True)
    events = await events_of(make_loop(model), plan)
    assert kinds(events) == [
        "step_started",
        "tool_call",
        "tool_result",
        "step_started",
        "message_delta",
        "message_delta",
        "done",
    ]
    fact = '- calculator({"expression":"6*7"}) = 42'
    assert fact in model.calls()[1]["messages"][0]["content"]
    [answer_body] = model.streamed()
    assert "format" not in answer_body and "tools" not in answer_body
    assert answer_body["stream"] is True
    assert answer_body["options"] == {}
    system, *turns = answer_body["messages"]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.")
    assert f"Facts from tools:\n{fact}" in system["content"]
    assert turns == [QUESTION]
    done = events[-1]
    assert (done["stopped"], done["output"]) == ("done", "It is 42.")
    assert done["usage"] == usage(prompt=150, completion=18, model_calls=3, tool_calls=1)
    assert done["conversation"] == [
        QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": "6*7"}}}],
        },
        {"role": "tool", "tool_name": "calculator", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ]
    assert done["steps"][-1] == {"type": "message", "step": 2, "content": "It is 42."}


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "calculator", "argu',
        "not json",
        '{"name": "answer", "arguments": {}}',
        '{"name": "rm", "arguments": {}}',
    ],
)
async def test_an_answer_or_unreadable_decision_goes_to_a_free_text_answer(content: str) -> None:
    model = ScriptedModel(answers=[decided(raw=content)], streams=[said("Sorry.")])
    events = await events_of(make_loop(model), make_plan([CALC], grammar=True))
    assert kinds(events) == ["step_started", "message_delta", "done"]
    assert events[-1]["output"] == "Sorry."
    assert model.streamed()[0]["messages"] == [{"role": "system", "content": "Be brief."}, QUESTION]


@pytest.mark.parametrize(("second", "runs"), [("6*7", 1), ("7*6", 2)])
async def test_a_repeated_identical_call_is_not_run_again(second: str, runs: int) -> None:
    model = ScriptedModel(
        answers=[
            decided("calculator", {"expression": "6*7"}),
            decided("calculator", {"expression": second}),
            decided("answer"),
        ],
        streams=[said("42")],
    )
    events = await events_of(make_loop(model), make_plan([CALC], grammar=True))
    assert sum(e["type"] == "tool_result" for e in events) == runs
    assert len(model.calls()) == runs + 1  # a repeat is answered at once, without another decision
    assert events[-1]["output"] == "42"
    assert events[-1]["stopped"] == "done"


async def test_required_tool_choice_leaves_answer_out_of_the_first_decision_only() -> None:
    model = ScriptedModel(
        answers=[decided("calculator", {"expression": "6*7"}), decided("answer")], streams=[said("42")]
    )
    await events_of(make_loop(model), make_plan([CALC], grammar=True, tool_choice="required"))
    first, second = (body["format"] for body in model.calls())
    assert first == decision_schema([CALC], may_answer=False)
    assert "anyOf" not in first
    assert first["properties"]["name"]["enum"] == ["calculator"]
    assert [o["properties"]["name"]["enum"] for o in second["anyOf"]] == [["calculator"], ["answer"]]


# --- limits


@pytest.mark.parametrize("grammar", [False, True])
async def test_the_run_stops_at_max_steps_while_the_model_still_calls_tools(grammar: bool) -> None:
    if grammar:
        model = ScriptedModel(
            answers=[decided("calculator", {"expression": "1+1"}), decided("calculator", {"expression": "2+2"})]
        )
    else:
        model = ScriptedModel(
            streams=[calling(("calculator", {"expression": "1+1"})), calling(("calculator", {"expression": "2+2"}))]
        )
    events = await events_of(make_loop(model), make_plan([CALC], grammar=grammar, max_steps=2))
    done = events[-1]
    assert done["stopped"] == "max_steps"
    assert done["output"] == ""
    assert [e["content"] for e in events if e["type"] == "tool_result"] == ["2", "4"]
    assert kinds(events).count("step_started") == 2
    assert done["usage"]["model_calls"] == 2
    assert len(model.bodies) == 2


@pytest.mark.parametrize("grammar", [False, True])
async def test_a_deadline_already_past_stops_the_run_before_the_model_answers(grammar: bool) -> None:
    model = ScriptedModel(answers=[decided("answer")], streams=[said("late")])
    loop = make_loop(model, clock=Clock(100.0))
    events = await events_of(loop, make_plan([CALC], grammar=grammar, deadline=50.0))
    assert kinds(events) == ["step_started", "done"]
    assert events[-1]["stopped"] == "deadline"
    assert events[-1]["usage"]["model_calls"] == 0
    assert model.calls() == []  # the decision was never sent
    assert len(model.stream_exits) == len(model.streamed())  # a stream it opened, it closed


async def test_a_deadline_passing_between_chunks_closes_the_stream() -> None:
    clock = Clock(0.0)

    def late() -> None:
        clock.now = 20.0

    model = ScriptedModel(streams=[[piece("Hel"), late, *said("lo")]])
    events = await events_of(make_loop(model, clock=clock), make_plan([CALC], deadline=10.0))
    assert kinds(events) == ["step_started", "message_delta", "message_delta", "done"]
    assert events[-1]["stopped"] == "deadline"
    assert model.stream_exits == ["_Deadline"]


async def test_a_stream_that_stops_answering_ends_at_the_deadline() -> None:
    model = ScriptedModel(streams=[[piece("Hel"), asyncio.Event()]])
    events = await events_of(make_loop(model, clock=Clock(0.0)), make_plan([CALC], deadline=0.05))
    assert kinds(events) == ["step_started", "message_delta", "done"]
    assert events[-1]["stopped"] == "deadline"
    assert model.stream_exits == ["_Deadline"]


async def test_a_tool_still_running_at_the_deadline_is_cancelled() -> None:
    entered, cancelled = asyncio.Event(), []
    tools = FakeTools(wait=hanging(entered, cancelled))
    model = ScriptedModel(streams=[calling(("wait", {}))])
    events = await events_of(make_loop(model, tools, clock=Clock(0.0)), make_plan(tools.all(), deadline=0.05))
    assert kinds(events) == ["step_started", "tool_call", "done"]
    assert events[-1]["stopped"] == "deadline"
    assert cancelled == [True]


async def test_a_step_waiting_for_admission_ends_at_the_deadline() -> None:
    model = ScriptedModel(streams=[said("late")], enter_gate=asyncio.Event())
    loop = make_loop(model, clock=Clock(0.0))
    async with asyncio.timeout(1.0):
        events = [event async for event in loop.run(make_plan([CALC], deadline=0.05))]
    assert events[-1]["stopped"] == "deadline"


# --- errors and cancellation


@pytest.mark.parametrize("grammar", [False, True])
async def test_an_error_on_the_first_model_call_propagates(grammar: bool) -> None:
    model = ScriptedModel(answers=[QueueFull("the queue is full")], streams=[[QueueFull("the queue is full")]])
    with pytest.raises(QueueFull):
        await events_of(make_loop(model), make_plan([CALC], grammar=grammar))


@pytest.mark.parametrize("grammar", [False, True])
async def test_an_error_on_a_later_step_stops_the_run_with_the_error(grammar: bool) -> None:
    crash = BackendError("the engine stopped")
    if grammar:
        model = ScriptedModel(answers=[decided("calculator", {"expression": "6*7"}), crash])
    else:
        model = ScriptedModel(streams=[calling(("calculator", {"expression": "6*7"})), [crash]])
    events = await events_of(make_loop(model), make_plan([CALC], grammar=grammar))
    done = events[-1]
    assert done["type"] == "done"
    assert done["stopped"] == "error"
    assert done["error"] == {"code": "backend_error", "message": "the engine stopped"}
    assert done["usage"] == usage(prompt=0, completion=0, model_calls=1, tool_calls=1)
    assert [s["type"] for s in done["steps"]] == ["tool_call", "tool_result"]


async def test_cancelling_the_consumer_closes_the_step_stream() -> None:
    reached = asyncio.Event()
    model = ScriptedModel(streams=[[piece("Hel"), reached.set, asyncio.Event()]])
    seen: list[JsonDict] = []

    async def consume() -> None:
        async for event in make_loop(model).run(make_plan([CALC])):
            seen.append(event)

    task = asyncio.create_task(consume())
    async with asyncio.timeout(BOUND):
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert model.stream_exits == ["CancelledError"]
    assert kinds(seen) == ["step_started", "message_delta"]


async def test_cancelling_the_consumer_cancels_a_running_tool() -> None:
    entered, cancelled = asyncio.Event(), []
    tools = FakeTools(wait=hanging(entered, cancelled))
    model = ScriptedModel(streams=[calling(("wait", {}))])

    async def consume() -> None:
        async for _ in make_loop(model, tools).run(make_plan(tools.all())):
            pass

    task = asyncio.create_task(consume())
    async with asyncio.timeout(BOUND):
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cancelled == [True]


async def test_closing_the_run_events_closes_the_step_stream_at_once() -> None:
    model = ScriptedModel(streams=[[piece("Hel"), asyncio.Event()]])
    events = make_loop(model).run(make_plan([CALC]))
    gc.disable()  # "at once": not whenever the collector happens to run
    try:
        async with asyncio.timeout(BOUND):
            seen = [await anext(events), await anext(events)]
            await events.aclose()
        assert kinds(seen) == ["step_started", "message_delta"]
        assert model.stream_exits == ["GeneratorExit"]
    finally:
        gc.enable()
