"""Agents on the service API (tenant-scoped; an admin's list shows every tenant's): ``/api/v1/agents``.

Definitions (create, list, get, update, delete), the tools a tenant may give an agent, documents for
``search_documents``, runs (non-streamed JSON, or NDJSON events ending in ``done``; one error event on failure,
as every stream here) and the stored runs. The loop is ``service/agents/loop.py``; every model call of a run goes
through the pipeline as the caller's tenant.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from shared_ollama.api.deps import context_of
from shared_ollama.api.errors import native_error_body, note_error, request_id_of
from shared_ollama.api.http import NDJSON, json_response, parse
from shared_ollama.api.openapi import LeanRoute, body
from shared_ollama.errors import InternalError, SharedOllamaError
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.agents.agents import Agents, PreparedRun
from shared_ollama.service.agents.definition import AgentDefinition, RunRequest
from shared_ollama.web import mark_answered, until_disconnect

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], route_class=LeanRoute)


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    title: str | None = Field(default=None, max_length=500)


def agents_of(request: Request) -> Agents:
    agents: Agents = request.app.state.agents
    return agents


@router.get("", summary="The tenant's agents (every tenant's for an operator key)")
async def list_agents(request: Request) -> Response:
    return json_response({"agents": await agents_of(request).list(context_of(request))})


@router.post("/create", summary="Create an agent", status_code=201, openapi_extra=body(AgentDefinition))
async def create_agent(request: Request) -> Response:
    definition = await parse(request, AgentDefinition)
    return json_response(await agents_of(request).create(context_of(request), definition), status=201)


@router.get("/tools", summary="The tools this tenant's agents may use, and the MCP servers' state")
async def list_tools(request: Request) -> Response:
    agents = agents_of(request)
    ctx = context_of(request)
    return json_response({"tools": agents.tools(ctx), "mcp_servers": agents.servers(ctx)})


@router.get("/{name}", summary="One agent")
async def get_agent(request: Request, name: str) -> Response:
    return json_response(await agents_of(request).get(context_of(request), name))


@router.put("/{name}", summary="Replace an agent's definition", openapi_extra=body(AgentDefinition))
async def update_agent(request: Request, name: str) -> Response:
    definition = await parse(request, AgentDefinition)
    return json_response(await agents_of(request).update(context_of(request), name, definition))


@router.delete("/{name}", summary="Delete an agent, its runs and its documents")
async def delete_agent(request: Request, name: str) -> Response:
    await agents_of(request).delete(context_of(request), name)
    return json_response({"deleted": name})


@router.post("/{name}/documents", summary="Add a document for search_documents", status_code=201)
async def add_document(request: Request, name: str) -> Response:
    doc = await parse(request, DocumentRequest)
    ctx = context_of(request)
    work = agents_of(request).add_document(ctx, name, doc.text, doc.title)
    return json_response(await until_disconnect(request, work), status=201)


@router.get("/{name}/documents", summary="The agent's documents")
async def list_documents(request: Request, name: str) -> Response:
    return json_response({"documents": await agents_of(request).list_documents(context_of(request), name)})


@router.delete("/{name}/documents/{document_id}", summary="Delete one of the agent's documents")
async def delete_document(request: Request, name: str, document_id: str) -> Response:
    await agents_of(request).delete_document(context_of(request), name, document_id)
    return json_response({"deleted": document_id})


@router.get("/{name}/runs", summary="The agent's runs, newest first")
async def list_runs(request: Request, name: str, limit: int = 50) -> Response:
    limit = max(1, min(limit, 500))
    return json_response({"runs": await agents_of(request).runs(context_of(request), name, limit)})


@router.get("/{name}/runs/{run_id}", summary="One run with its transcript")
async def get_run(request: Request, name: str, run_id: str) -> Response:
    return json_response(await agents_of(request).run_record(context_of(request), name, run_id))


async def last_event(events: AsyncGenerator[JsonDict, None]) -> JsonDict:
    done: JsonDict = {}
    async with contextlib.aclosing(events):
        async for event in events:
            done = event
    return done


async def started(request: Request, run: PreparedRun) -> Started:
    """A streamed run's events up to its first model call's admission (a refusal before it, such as a tenant at
    its cap, raises here: an ordinary HTTP error with its Retry-After, as every stream's), and the rest to come."""
    events = run.events()
    first: list[JsonDict] = []

    async def until_admitted() -> None:
        while not run.admitted.is_set():
            try:
                first.append(await anext(events))
            except StopAsyncIteration:
                return

    try:
        await until_disconnect(request, until_admitted())
    except BaseException:
        await events.aclose()
        raise
    return Started(first, events)


@dataclass(frozen=True, slots=True)
class Started:
    first: list[JsonDict]
    rest: AsyncGenerator[JsonDict, None]

    async def all(self) -> AsyncIterator[JsonDict]:
        async with contextlib.aclosing(self.rest):
            for event in self.first:
                yield event
            async for event in self.rest:
                yield event


@router.post("/{name}/run", summary="Run an agent", openapi_extra=body(RunRequest))
async def run_agent(request: Request, name: str) -> Response:
    req = await parse(request, RunRequest)
    agents = agents_of(request)
    ctx = context_of(request)
    run = await agents.prepare(ctx, name, req)
    if not req.stream:
        done = await until_disconnect(request, last_event(run.events()))
        return json_response(await agents.finish(ctx, name, run, done))
    begun = await started(request, run)
    return StreamingResponse(_ndjson(request, agents, ctx, name, run, begun), media_type=NDJSON)


async def _ndjson(
    request: Request, agents: Agents, ctx: RequestContext, name: str, run: PreparedRun, begun: Started
) -> AsyncIterator[bytes]:
    """The run's events as NDJSON lines; the ``done`` line carries the stored summary."""
    try:
        async for event in begun.all():
            if event.get("type") == "done":
                event = {"type": "done", **await agents.finish(ctx, name, run, event)}
            yield orjson.dumps(event) + b"\n"
            if event.get("type") == "done":
                mark_answered(request)
    except Exception as exc:
        if not isinstance(exc, SharedOllamaError):
            log.exception("agent run %s of %s failed", run.plan.run_id, name)
        error = exc if isinstance(exc, SharedOllamaError) else InternalError("the agent run failed unexpectedly")
        note_error(request, error)
        yield orjson.dumps({"type": "error", **native_error_body(error, request_id_of(request))}) + b"\n"
        mark_answered(request)
