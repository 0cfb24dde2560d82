"""The agents feature as the API uses it: definitions checked and kept per tenant, documents embedded through the
pipeline, runs prepared, stored and counted. Each model call of a run goes through the gateway as the request's
tenant (``PipelineModel``)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from shared_ollama.errors import BackendError, InvalidRequest, NotFound
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.engine_policy import check_model
from shared_ollama.service.agents.definition import AgentDefinition, RunRequest
from shared_ollama.service.agents.documents import Documents
from shared_ollama.service.agents.loop import AgentLoop, RunPlan
from shared_ollama.service.agents.metrics import AgentMetrics
from shared_ollama.service.agents.store import AgentStore
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import Hit, ToolContext, ToolSpec
from shared_ollama.service.gateway import Gateway

JsonDict = dict[str, Any]

EMBED_BATCH = 32


class PipelineModel:
    """A run's model calls: native chats through the gateway as the run's tenant, never from the cache."""

    def __init__(self, gateway: Gateway, ctx: RequestContext) -> None:
        self.gateway = gateway
        self.ctx = ctx
        self.admitted = asyncio.Event()
        """Set once a model call got through admission (answered, or its stream opened): a streamed run's
        response starts only then, so a refusal before it is an ordinary HTTP error with its Retry-After."""

    async def call(self, body: JsonDict) -> JsonDict:
        raw = await self.gateway.call(self.ctx, "/api/chat", {**body, "stream": False}, cache="off")
        self.admitted.set()
        answer = orjson.loads(raw)
        return answer if isinstance(answer, dict) else {}

    @asynccontextmanager
    async def stream(self, body: JsonDict) -> AsyncIterator[AsyncIterator[JsonDict]]:
        async with self.gateway.stream(self.ctx, "/api/chat", {**body, "stream": True}, cache="off") as lines:
            self.admitted.set()
            yield _chunks(lines)


async def _chunks(lines: AsyncIterator[bytes]) -> AsyncIterator[JsonDict]:
    async for line in lines:
        chunk = orjson.loads(line)
        if isinstance(chunk, dict) and "error" in chunk:
            raise BackendError(str(chunk["error"]))
        if isinstance(chunk, dict):
            yield chunk


@dataclass(frozen=True, slots=True)
class PreparedRun:
    loop: AgentLoop
    plan: RunPlan
    session: str
    admitted: asyncio.Event
    """Set when the run's first model call got through admission."""

    def events(self) -> AsyncGenerator[JsonDict, None]:
        return self.loop.run(self.plan)


class Agents:
    def __init__(
        self,
        gateway: Gateway,
        store: AgentStore,
        documents: Documents,
        toolbox: ToolBox,
        metrics: AgentMetrics,
        *,
        mcp_status: Callable[[str | None], list[JsonDict]] = lambda tenant: [],
    ) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.store = store
        self.documents = documents
        self.toolbox = toolbox
        self.metrics = metrics
        self.mcp_status = mcp_status
        """Each MCP server's name, transport, state, tool count and last error (those a tenant may use; None: all)."""

    @property
    def embedding_model(self) -> str:
        return self.settings.agent_embedding_model or self.settings.default_embedding_model

    # --- definitions

    async def _checked(self, ctx: RequestContext, definition: AgentDefinition) -> JsonDict:
        """The definition with its model resolved; 400/403/404 naming what is wrong."""
        limit = self.settings.agent_max_steps_limit
        if definition.max_steps > limit:
            raise InvalidRequest(f"max_steps must be at most {limit}", param="max_steps")
        model = self.gateway.policy.resolve_alias(definition.model)
        check_model(ctx.tenant, model)
        tags = orjson.loads(await self.gateway.get("/api/tags"))
        names = {str(m.get("name")) for m in tags.get("models", [])} | {
            str(m.get("model")) for m in tags.get("models", [])
        }
        if model not in names and f"{model}:latest" not in names:
            raise InvalidRequest(f"model '{definition.model}' is not installed", param="model")
        self.toolbox.resolve(ctx.tenant.name, definition.tools)
        return {**definition.stored(), "model": model}

    async def create(self, ctx: RequestContext, definition: AgentDefinition) -> JsonDict:
        if not definition.name:
            raise InvalidRequest("name is required", param="name")
        return await self.store.create(ctx.tenant.name, definition.name, await self._checked(ctx, definition))

    async def update(self, ctx: RequestContext, name: str, definition: AgentDefinition) -> JsonDict:
        if definition.name is not None and definition.name != name:
            raise InvalidRequest("name cannot be changed (create a new agent)", param="name")
        updated = await self.store.update(ctx.tenant.name, name, await self._checked(ctx, definition))
        if updated is None:
            raise NotFound(f"agent '{name}' not found")
        return updated

    async def get(self, ctx: RequestContext, name: str) -> JsonDict:
        agent = await self.store.get(ctx.tenant.name, name)
        if agent is None:
            raise NotFound(f"agent '{name}' not found")
        return agent

    async def list(self, ctx: RequestContext) -> list[JsonDict]:
        return await self.store.list(None if ctx.tenant.is_admin else ctx.tenant.name)

    async def delete(self, ctx: RequestContext, name: str) -> None:
        if not await self.store.delete(ctx.tenant.name, name):
            raise NotFound(f"agent '{name}' not found")
        await self.documents.delete_agent(ctx.tenant.name, name)

    def servers(self, ctx: RequestContext) -> list[JsonDict]:
        return self.mcp_status(None if ctx.tenant.is_admin else ctx.tenant.name)

    def tools(self, ctx: RequestContext) -> list[JsonDict]:
        return [
            {"name": t.name, "description": t.description, "parameters": t.parameters, "source": t.source}
            for t in self.toolbox.specs(ctx.tenant.name)
        ]

    # --- documents

    async def _embed(self, ctx: RequestContext, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            body = {"model": self.embedding_model, "input": texts[start : start + EMBED_BATCH]}
            answer = orjson.loads(await self.gateway.call(ctx, "/api/embed", body))
            vectors += answer.get("embeddings") or []
        return vectors

    async def add_document(self, ctx: RequestContext, name: str, text: str, title: str | None) -> JsonDict:
        await self.get(ctx, name)

        async def embed(texts: list[str]) -> list[list[float]]:
            return await self._embed(ctx, texts)

        added = await self.documents.add(ctx.tenant.name, name, text, title=title, embed=embed)
        if await self.store.get(ctx.tenant.name, name) is None:  # deleted while its text was being embedded
            await self.documents.delete(ctx.tenant.name, name, str(added["document_id"]))
            raise NotFound(f"agent '{name}' not found")
        return added

    async def list_documents(self, ctx: RequestContext, name: str) -> list[JsonDict]:
        await self.get(ctx, name)
        return await self.documents.list(ctx.tenant.name, name)

    async def delete_document(self, ctx: RequestContext, name: str, document_id: str) -> None:
        await self.get(ctx, name)
        if not await self.documents.delete(ctx.tenant.name, name, document_id):
            raise NotFound(f"document '{document_id}' not found")

    # --- runs

    async def _grammar(self, model: str, mode: str) -> bool:
        if mode != "auto":
            return mode == "grammar"
        shown = orjson.loads(await self.gateway.inspect("/api/show", {"model": model}))
        return "tools" not in (shown.get("capabilities") or [])

    def _tools_now(self, tenant: str, names: list[str]) -> list[ToolSpec]:
        """The agent's tools as they are now. One that is gone for the moment (an MCP server down or restarting)
        stays offered, so that calling it is a tool error the model sees, not a refused run."""
        known = {spec.name: spec for spec in self.toolbox.specs(tenant)}
        gone = {"type": "object", "properties": {}}
        return [known.get(name) or ToolSpec(name, "Unavailable at the moment.", gone, "unavailable") for name in names]

    async def prepare(self, ctx: RequestContext, name: str, req: RunRequest) -> PreparedRun:
        """The loop and plan of a run, and its session id; 400/404 before anything runs."""
        agent = await self.get(ctx, name)
        try:
            new = req.new_messages()
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="input") from exc
        limit = self.settings.agent_max_steps_limit
        if req.max_steps is not None and req.max_steps > limit:
            raise InvalidRequest(f"max_steps must be at most {limit}", param="max_steps")
        session = req.session or f"ses_{uuid.uuid4().hex[:20]}"
        history = await self.store.session_messages(ctx.tenant.name, name, session) if req.session else []
        history = _recent_turns(history, self.settings.agent_session_max_messages)
        tools = self._tools_now(ctx.tenant.name, list(agent.get("tools") or []))
        ctx = dataclasses.replace(ctx, cache_header=None)  # every step goes to the engine, whatever the header
        ctx.record.model = str(agent["model"])
        searching = "search_documents" in {t.name for t in tools}

        async def search(query: str, k: int) -> list[Hit]:
            [vector] = await self._embed(ctx, [query])
            return await self.documents.search(ctx.tenant.name, name, vector, k)

        plan = RunPlan(
            model=str(agent["model"]),
            system=agent.get("system"),
            tools=tools,
            conversation=[*history, *new],
            max_steps=req.max_steps or int(agent.get("max_steps") or 8),
            deadline=time.monotonic() + self.settings.agent_run_timeout_seconds,
            grammar=bool(tools) and await self._grammar(str(agent["model"]), str(agent.get("tool_mode") or "auto")),
            options=dict(agent.get("options") or {}),
            tool_choice=str(agent.get("tool_choice") or "auto"),
        )
        tool_ctx = ToolContext(ctx.tenant.name, name, search if searching else None)
        model = PipelineModel(self.gateway, ctx)
        return PreparedRun(AgentLoop(model, self.toolbox, tool_ctx), plan, session, model.admitted)

    async def finish(self, ctx: RequestContext, name: str, run: PreparedRun, done: JsonDict) -> JsonDict:
        """Store and count a finished run (its ``done`` event); the run's public result."""
        session = run.session
        conversation = done.pop("conversation", [])
        done.pop("type", None)
        result = {**done, "agent": name, "session": session}
        usage = done.get("usage") or {}
        ctx.record.model = run.plan.model  # not the embedding model a document search used last
        ctx.record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        ctx.record.completion_tokens = int(usage.get("completion_tokens") or 0)
        self.metrics.run(name, ctx.tenant.name, done)
        await self.store.add_run(ctx.tenant.name, name, {**result, "created_at": time.time(), "messages": conversation})
        return result

    async def runs(self, ctx: RequestContext, name: str, limit: int) -> list[JsonDict]:
        await self.get(ctx, name)
        return await self.store.runs(ctx.tenant.name, name, limit=limit)

    async def run_record(self, ctx: RequestContext, name: str, run_id: str) -> JsonDict:
        run = await self.store.run(ctx.tenant.name, name, run_id)
        if run is None:
            raise NotFound(f"run '{run_id}' of agent '{name}' not found")
        return run


def _recent_turns(history: list[JsonDict], limit: int) -> list[JsonDict]:
    """At most ``limit`` of a session's latest messages, starting at a user turn (never at a tool result whose call
    was cut off)."""
    if len(history) <= limit:
        return history
    recent = history[-limit:]
    start = next((i for i, m in enumerate(recent) if m.get("role") == "user"), len(recent))
    return recent[start:]
