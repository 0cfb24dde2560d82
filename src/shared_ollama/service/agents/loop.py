"""The agent loop: model step, tool calls, results appended, until the model answers without a tool call, the run
uses its steps, or its deadline passes.

Every step is one native chat through ``StepModel`` (the API's implementation goes through the gateway pipeline as
the agent's tenant: caps, fair queue, deadline, accounting; cache off). The loop yields events as they happen
(``step_started``, ``message_delta``, ``tool_call``, ``tool_result``, ``done``); the last is ``done`` with the run's
summary, or the loop raises: a model call's error before anything was answered (the API turns it into the usual
HTTP error), or ``CancelledError`` when the client left (the step's engine request is cancelled with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import orjson

from shared_ollama.errors import SharedOllamaError
from shared_ollama.service.agents.prompting import answer_messages, decision_messages, decision_schema, read_decision
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import ToolContext, ToolOutcome, ToolSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
JsonDict = dict[str, Any]
Stopped = Literal["done", "max_steps", "deadline", "error"]

DECISION_TOKENS = 256
"""Output bound of a grammar-mode decision (a call's JSON) unless the agent's options set one. Decisions are also
greedy (temperature 0) unless the options set a temperature."""


class StepModel(Protocol):
    """One model call of a run, through the pipeline."""

    async def call(self, body: JsonDict) -> JsonDict:
        """A non-streamed native chat answer."""
        ...

    def stream(self, body: JsonDict) -> AbstractAsyncContextManager[AsyncIterator[JsonDict]]:
        """A streamed native chat: its chunks, parsed."""
        ...


@dataclass(slots=True)
class RunPlan:
    """Everything a run needs, resolved by the API."""

    model: str
    system: str | None
    tools: list[ToolSpec]
    conversation: list[JsonDict]
    """The session's earlier turns and this run's new ones (native, no system message); the loop appends."""
    max_steps: int
    deadline: float
    """``time.monotonic()`` past which the run stops with ``deadline``."""
    grammar: bool
    """Tool calls through a JSON schema the engine enforces (``prompting.py``) instead of the model's template."""
    options: JsonDict = field(default_factory=dict)
    tool_choice: str = "auto"
    run_id: str = field(default_factory=lambda: f"run_{uuid.uuid4().hex[:24]}")


@dataclass(slots=True)
class Summary:
    run_id: str
    output: str = ""
    steps: list[JsonDict] = field(default_factory=list)
    usage: JsonDict = field(
        default_factory=lambda: {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "model_calls": 0,
            "tool_calls": 0,
            "tool_errors": 0,
        }
    )
    stopped: Stopped = "done"
    error: JsonDict | None = None

    def public(self) -> JsonDict:
        out: JsonDict = {
            "run_id": self.run_id,
            "output": self.output,
            "steps": self.steps,
            "usage": self.usage,
            "stopped": self.stopped,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class _Deadline(Exception):
    """The run's deadline passed during a step or a tool call."""


class AgentLoop:
    def __init__(
        self,
        model: StepModel,
        toolbox: ToolBox,
        tool_ctx: ToolContext,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.toolbox = toolbox
        self.tool_ctx = tool_ctx
        self.clock = clock

    async def _bounded(self, plan: RunPlan, work: Awaitable[T]) -> T:
        remaining = plan.deadline - self.clock()
        if remaining <= 0:
            if asyncio.iscoroutine(work):
                work.close()
            elif isinstance(work, asyncio.Future):
                work.cancel()
            raise _Deadline
        try:
            async with asyncio.timeout(remaining):
                return await work
        except TimeoutError:
            raise _Deadline from None

    async def run(self, plan: RunPlan) -> AsyncGenerator[JsonDict, None]:
        """The run's events; the last is ``done`` with the summary (``summary`` key) and the conversation."""
        summary = Summary(plan.run_id)
        try:
            async with contextlib.aclosing(self._steps(plan, summary)) as events:
                async for event in events:
                    yield event
        except _Deadline:
            summary.stopped = "deadline"
        except SharedOllamaError as exc:
            if summary.usage["model_calls"] == 0:
                raise  # nothing happened yet: the caller answers with the error itself
            summary.stopped = "error"
            summary.error = {"code": exc.code, "message": str(exc)}
        yield {"type": "done", **summary.public(), "conversation": plan.conversation}

    async def _steps(self, plan: RunPlan, summary: Summary) -> AsyncIterator[JsonDict]:
        calls_made: set[bytes] = set()
        for step in range(1, plan.max_steps + 1):
            yield {"type": "step_started", "step": step}
            forced = step == 1 and plan.tool_choice == "required" and bool(plan.tools)
            if plan.grammar:
                decided = await self._decide(plan, summary, forced)
                key = orjson.dumps(decided, option=orjson.OPT_SORT_KEYS) if decided else b""
                if decided is None or key in calls_made:  # ready to answer, or asking again what it knows
                    async with contextlib.aclosing(self._answer(plan, summary, step)) as events:
                        async for event in events:
                            yield event
                    return
                calls_made.add(key)
                calls = [{"function": {"name": decided[0], "arguments": decided[1]}}]
                plan.conversation.append({"role": "assistant", "content": "", "tool_calls": calls})
            else:
                message: JsonDict = {}
                async with contextlib.aclosing(self._native_step(plan, summary, forced, message)) as events:
                    async for event in events:
                        yield event
                calls = list(message.get("tool_calls") or [])
                plan.conversation.append(message)
                if not calls:
                    summary.output = str(message.get("content") or "")
                    summary.steps.append({"type": "message", "step": step, "content": summary.output})
                    return
            async with contextlib.aclosing(self._tools(plan, summary, step, calls)) as events:
                async for event in events:
                    yield event
        summary.stopped = "max_steps"

    def _body(self, plan: RunPlan, messages: list[JsonDict], **extra: Any) -> JsonDict:
        return {"model": plan.model, "messages": messages, "options": dict(plan.options), **extra}

    def _count(self, summary: Summary, final: JsonDict) -> None:
        summary.usage["model_calls"] += 1
        summary.usage["prompt_tokens"] += int(final.get("prompt_eval_count") or 0)
        summary.usage["completion_tokens"] += int(final.get("eval_count") or 0)

    async def _decide(self, plan: RunPlan, summary: Summary, forced: bool) -> tuple[str, JsonDict] | None:
        """A grammar-mode decision: the call the model chose, or None when it is ready to answer."""
        if not plan.tools:
            return None
        body = self._body(
            plan,
            decision_messages(plan.system, plan.tools, plan.conversation),
            format=decision_schema(plan.tools, may_answer=not forced),
            stream=False,
        )
        body["options"].setdefault("num_predict", DECISION_TOKENS)
        body["options"].setdefault("temperature", 0)  # a call's arguments are not the place for variety
        answer = await self._bounded(plan, self.model.call(body))
        self._count(summary, answer)
        content = str((answer.get("message") or {}).get("content") or "")
        return read_decision(content, plan.tools)

    async def _answer(self, plan: RunPlan, summary: Summary, step: int) -> AsyncIterator[JsonDict]:
        """The grammar-mode final answer: free text, streamed, with the tools' results as facts."""
        message: JsonDict = {}
        body = self._body(plan, answer_messages(plan.system, plan.conversation), stream=True)
        async with contextlib.aclosing(self._streamed(plan, summary, body, message)) as events:
            async for event in events:
                yield event
        summary.output = str(message.get("content") or "")
        summary.steps.append({"type": "message", "step": step, "content": summary.output})
        plan.conversation.append({"role": "assistant", "content": summary.output})

    async def _native_step(
        self, plan: RunPlan, summary: Summary, forced: bool, message: JsonDict
    ) -> AsyncIterator[JsonDict]:
        """A step with the tools in the model's own template (``forced``: the grammar makes the first call)."""
        if forced:
            decided = await self._decide(plan, summary, forced=True)
            if decided is not None:
                calls = [{"function": {"name": decided[0], "arguments": decided[1]}}]
                message.update({"role": "assistant", "content": "", "tool_calls": calls})
                return
            # an unreadable forced call (cut short): the step goes on as an ordinary one
        tools = [t.as_ollama_tool() for t in plan.tools]
        body = self._body(plan, [*_system(plan.system), *plan.conversation], stream=True)
        if tools:
            body["tools"] = tools
        async with contextlib.aclosing(self._streamed(plan, summary, body, message)) as events:
            async for event in events:
                yield event

    async def _streamed(
        self, plan: RunPlan, summary: Summary, body: JsonDict, message: JsonDict
    ) -> AsyncIterator[JsonDict]:
        """A streamed step: its text as ``message_delta`` events; ``message`` gets the whole assistant message."""
        parts: list[str] = []
        calls: list[JsonDict] = []
        final: JsonDict = {}
        async with contextlib.AsyncExitStack() as stack:  # opening waits in the fair queue: within the deadline too
            chunks = await self._bounded(plan, stack.enter_async_context(self.model.stream(body)))
            iterator = aiter(chunks)
            while True:
                try:
                    chunk = await self._bounded(plan, anext(iterator))
                except StopAsyncIteration:
                    break
                piece = chunk.get("message") or {}
                if piece.get("content"):
                    parts.append(str(piece["content"]))
                    yield {"type": "message_delta", "content": piece["content"]}
                calls += piece.get("tool_calls") or []
                if chunk.get("done"):
                    final = chunk
        self._count(summary, final)
        message.update({"role": "assistant", "content": "".join(parts)})
        if calls:
            message["tool_calls"] = calls

    async def _tools(
        self, plan: RunPlan, summary: Summary, step: int, calls: list[JsonDict]
    ) -> AsyncIterator[JsonDict]:
        """Run a step's calls (in parallel when several) and append their results to the conversation."""
        named: list[tuple[str, str, object]] = []
        for index, call in enumerate(calls):
            fn = call.get("function") or {}
            call_id = f"call_{step}_{index}"
            name, arguments = str(fn.get("name") or ""), fn.get("arguments")
            named.append((call_id, name, arguments))
            summary.steps.append(
                {"type": "tool_call", "step": step, "id": call_id, "name": name, "arguments": arguments}
            )
            yield {"type": "tool_call", "step": step, "id": call_id, "name": name, "arguments": arguments}
        ctx = self.tool_ctx
        runs = [self.toolbox.run(ctx.tenant, name, args, ctx) for _, name, args in named]
        outcomes: list[ToolOutcome] = await self._bounded(plan, asyncio.gather(*runs))
        for (call_id, name, _), outcome in zip(named, outcomes, strict=True):
            summary.usage["tool_calls"] += 1
            summary.usage["tool_errors"] += int(outcome.error)
            result = {"id": call_id, "name": name, "content": outcome.content, "error": outcome.error}
            summary.steps.append({"type": "tool_result", "step": step, **result, **outcome.meta})
            plan.conversation.append({"role": "tool", "tool_name": name, "content": outcome.content})
            yield {"type": "tool_result", "step": step, **result}


def _system(system: str | None) -> list[JsonDict]:
    return [{"role": "system", "content": system}] if system else []
