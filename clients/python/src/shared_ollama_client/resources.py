"""``client.models`` and ``client.agents`` (and their asyncio twins on ``AsyncClient``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, cast, overload

from shared_ollama_client import _calls
from shared_ollama_client._calls import Messages
from shared_ollama_client._wire import Call
from shared_ollama_client.errors import InvalidResponse
from shared_ollama_client.streams import AsyncStream, Stream
from shared_ollama_client.types import AgentEvent, AgentRun, JsonObject, ModelInfo, PullProgress

SendJson = Callable[[Call], Any]
SendStream = Callable[[Call], Stream[Any]]
SendJsonAsync = Callable[[Call], Awaitable[Any]]
SendStreamAsync = Callable[[Call], Awaitable[AsyncStream[Any]]]
ModelInfos = list[ModelInfo]
JsonObjects = list[JsonObject]
Progress = Callable[[PullProgress], object]
"""Called with each progress line of a pull."""


def _agent_fields(
    system: str | None,
    description: str | None,
    tools: Sequence[str] | None,
    max_steps: int | None,
    options: Mapping[str, Any] | None,
    tool_choice: str | None,
    tool_mode: str | None,
) -> JsonObject:
    return {
        "system": system,
        "description": description,
        "tools": list(tools) if tools is not None else None,
        "max_steps": max_steps,
        "options": dict(options) if options is not None else None,
        "tool_choice": tool_choice,
        "tool_mode": tool_mode,
    }


def _pulled(last: PullProgress | None, name: str) -> PullProgress:
    if last is None:
        raise InvalidResponse(f"the pull of '{name}' answered no progress at all")
    return last


class Models:
    """The service's models (``/api/v1/models``). Changes (create, copy, delete, pull) are for admins, or tenants
    whose policy lets them manage models, when the service has keys."""

    def __init__(self, send_json: SendJson, send_stream: SendStream) -> None:
        self._json = send_json
        self._stream = send_stream

    def list(self) -> ModelInfos:
        """The installed models the caller may use."""
        return cast(ModelInfos, self._json(_calls.models_list()).get("models") or [])

    def ps(self) -> ModelInfos:
        """The models loaded in the engine now."""
        return cast(ModelInfos, self._json(_calls.models_ps()).get("models") or [])

    def show(self, name: str) -> JsonObject:
        """One model's details: ``details``, ``capabilities``, ``template``, ``parameters``, ``model_info``..."""
        return cast(JsonObject, self._json(_calls.models_show(name)))

    def create(self, name: str, modelfile: str) -> JsonObject:
        """Create ``name`` from Modelfile text (``FROM base``, ``SYSTEM``, ``PARAMETER``...)."""
        return cast(JsonObject, self._json(_calls.models_create(name, modelfile)))

    def copy(self, source: str, destination: str) -> None:
        """Copy ``source`` under the name ``destination``."""
        self._json(_calls.models_copy(source, destination))

    def delete(self, name: str) -> None:
        """Delete ``name``."""
        self._json(_calls.models_delete(name))

    def pull(self, name: str, *, progress: Progress | None = None, insecure: bool = False) -> PullProgress:
        """Pull ``name`` (``hf.co/owner/repo:quant`` or a registry name), calling ``progress`` with each progress
        line; returns the last (``{"status": "success"}``). A failed pull raises its typed error."""
        last: PullProgress | None = None
        with self._stream(_calls.models_pull(name, insecure=insecure)) as lines:
            for line in lines:
                last = cast(PullProgress, line)
                if progress is not None:
                    progress(last)
        return _pulled(last, name)


class Agents:
    """The tenant's agents (``/api/v1/agents``): named, tool-using, every model call through the service."""

    def __init__(self, send_json: SendJson, send_stream: SendStream) -> None:
        self._json = send_json
        self._stream = send_stream

    def list(self) -> JsonObjects:
        return cast(JsonObjects, self._json(_calls.agents_list()).get("agents") or [])

    def create(
        self,
        name: str,
        model: str,
        *,
        system: str | None = None,
        description: str | None = None,
        tools: Sequence[str] | None = None,
        max_steps: int | None = None,
        options: Mapping[str, Any] | None = None,
        tool_choice: Literal["auto", "required"] | None = None,
        tool_mode: Literal["auto", "native", "grammar"] | None = None,
    ) -> JsonObject:
        """Create an agent; ``tools`` are names from ``GET /api/v1/agents/tools`` (docs/AGENTS.md)."""
        fields = _agent_fields(system, description, tools, max_steps, options, tool_choice, tool_mode)
        return cast(JsonObject, self._json(_calls.agents_create(name, model, fields)))

    def get(self, name: str) -> JsonObject:
        return cast(JsonObject, self._json(_calls.agents_get(name)))

    def delete(self, name: str) -> None:
        """Delete the agent, its runs and its documents."""
        self._json(_calls.agents_delete(name))

    @overload
    def run(
        self,
        name: str,
        input: str | None = ...,
        *,
        messages: Messages | None = ...,
        stream: Literal[False] = ...,
        max_steps: int | None = ...,
        session: str | None = ...,
    ) -> AgentRun: ...
    @overload
    def run(
        self,
        name: str,
        input: str | None = ...,
        *,
        messages: Messages | None = ...,
        stream: Literal[True],
        max_steps: int | None = ...,
        session: str | None = ...,
    ) -> Stream[AgentEvent]: ...
    def run(
        self,
        name: str,
        input: str | None = None,
        *,
        messages: Messages | None = None,
        stream: bool = False,
        max_steps: int | None = None,
        session: str | None = None,
    ) -> AgentRun | Stream[AgentEvent]:
        """Run the agent on ``input`` (or ``messages``): the finished run, or with ``stream=True`` its events
        (``step_started``, ``message_delta``, ``tool_call``, ``tool_result``, then ``done``)."""
        call = _calls.agents_run(name, input, messages=messages, stream=stream, max_steps=max_steps, session=session)
        if stream:
            return cast("Stream[AgentEvent]", self._stream(call))
        return cast(AgentRun, self._json(call))


class AsyncModels:
    """``Models`` for ``AsyncClient``."""

    def __init__(self, send_json: SendJsonAsync, send_stream: SendStreamAsync) -> None:
        self._json = send_json
        self._stream = send_stream

    async def list(self) -> ModelInfos:
        return cast(ModelInfos, (await self._json(_calls.models_list())).get("models") or [])

    async def ps(self) -> ModelInfos:
        return cast(ModelInfos, (await self._json(_calls.models_ps())).get("models") or [])

    async def show(self, name: str) -> JsonObject:
        return cast(JsonObject, await self._json(_calls.models_show(name)))

    async def create(self, name: str, modelfile: str) -> JsonObject:
        return cast(JsonObject, await self._json(_calls.models_create(name, modelfile)))

    async def copy(self, source: str, destination: str) -> None:
        await self._json(_calls.models_copy(source, destination))

    async def delete(self, name: str) -> None:
        await self._json(_calls.models_delete(name))

    async def pull(self, name: str, *, progress: Progress | None = None, insecure: bool = False) -> PullProgress:
        last: PullProgress | None = None
        async with await self._stream(_calls.models_pull(name, insecure=insecure)) as lines:
            async for line in lines:
                last = cast(PullProgress, line)
                if progress is not None:
                    progress(last)
        return _pulled(last, name)


class AsyncAgents:
    """``Agents`` for ``AsyncClient``."""

    def __init__(self, send_json: SendJsonAsync, send_stream: SendStreamAsync) -> None:
        self._json = send_json
        self._stream = send_stream

    async def list(self) -> JsonObjects:
        return cast(JsonObjects, (await self._json(_calls.agents_list())).get("agents") or [])

    async def create(
        self,
        name: str,
        model: str,
        *,
        system: str | None = None,
        description: str | None = None,
        tools: Sequence[str] | None = None,
        max_steps: int | None = None,
        options: Mapping[str, Any] | None = None,
        tool_choice: Literal["auto", "required"] | None = None,
        tool_mode: Literal["auto", "native", "grammar"] | None = None,
    ) -> JsonObject:
        fields = _agent_fields(system, description, tools, max_steps, options, tool_choice, tool_mode)
        return cast(JsonObject, await self._json(_calls.agents_create(name, model, fields)))

    async def get(self, name: str) -> JsonObject:
        return cast(JsonObject, await self._json(_calls.agents_get(name)))

    async def delete(self, name: str) -> None:
        await self._json(_calls.agents_delete(name))

    @overload
    async def run(
        self,
        name: str,
        input: str | None = ...,
        *,
        messages: Messages | None = ...,
        stream: Literal[False] = ...,
        max_steps: int | None = ...,
        session: str | None = ...,
    ) -> AgentRun: ...
    @overload
    async def run(
        self,
        name: str,
        input: str | None = ...,
        *,
        messages: Messages | None = ...,
        stream: Literal[True],
        max_steps: int | None = ...,
        session: str | None = ...,
    ) -> AsyncStream[AgentEvent]: ...
    async def run(
        self,
        name: str,
        input: str | None = None,
        *,
        messages: Messages | None = None,
        stream: bool = False,
        max_steps: int | None = None,
        session: str | None = None,
    ) -> AgentRun | AsyncStream[AgentEvent]:
        call = _calls.agents_run(name, input, messages=messages, stream=stream, max_steps=max_steps, session=session)
        if stream:
            return cast("AsyncStream[AgentEvent]", await self._stream(call))
        return cast(AgentRun, await self._json(call))
