"""MCP servers as a tool provider: every configured server's tools, as ``<server>__<tool>``, for the tenants the
config lets use them (admins may use every server).

``start`` connects to every server in the background (``mcp_link.McpLink``, one task each) and returns at once: a
server that cannot start is logged and shown ``down`` (and tried again with backoff), never a failed start-up.
A call runs under its server's timeout; a timeout, a server error, a tool's ``isError`` or a crashed server all
come back as error outcomes the model sees, and a crashed stdio server is started again so a later call works.
``close`` stops every session, and with it every stdio server's process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types
import orjson
from mcp import MCPError

from shared_ollama.service.agents.mcp_config import McpConfig
from shared_ollama.service.agents.mcp_link import McpLink, RestartBudget, ServerDown, describe_error
from shared_ollama.service.agents.tooling import JsonDict, ToolContext, ToolOutcome, ToolSpec

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 10.0
"""How long ``close`` waits for a server's session to end (the SDK stops a stdio process within ~6 s) before it
cancels the task."""


def render_result(result: mcp_types.CallToolResult) -> str:
    """A tool result as text for the model: text blocks joined by newlines, other blocks named briefly; the
    structured content as JSON when there is no block at all."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio {block.mime_type}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {resource.uri}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)


class McpTools:
    """The ``ToolProvider`` over the configured MCP servers."""

    def __init__(
        self,
        config: McpConfig,
        *,
        is_admin: Callable[[str], bool],
        default_timeout: float,
        result_max_chars: int | None = None,
        log_dir: Path | None = None,
        start_timeout: float = 30.0,
        restart: Callable[[], RestartBudget] = RestartBudget,
    ) -> None:
        """``result_max_chars`` caps a result's text (None: no cap here); ``log_dir`` receives each stdio server's
        stderr as ``mcp-<name>.log``; ``restart`` makes each server's restart budget."""
        self._config = config
        self._is_admin = is_admin
        self._default_timeout = default_timeout
        self._result_max_chars = result_max_chars
        self._links = {
            server.name: McpLink(server, budget=restart(), start_timeout=start_timeout, log_dir=log_dir)
            for server in config.servers
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every server's task and return at once."""
        for link in self._links.values():
            self._tasks.append(asyncio.create_task(link.run(), name=f"mcp-{link.name}"))

    async def close(self) -> None:
        """Stop every server (each stdio server's process ends with its session); bounded."""
        for link in self._links.values():
            link.stop()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE_SECONDS)
        for task in tasks:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None:
                log.warning("mcp server task %s failed: %s", task.get_name(), describe_error(error))

    async def wait_settled(self) -> None:
        """Until every server's first start has succeeded or failed (bound it with ``asyncio.timeout``)."""
        await asyncio.gather(*(link.wait_settled() for link in self._links.values()))

    def _may_use(self, tenant: str, link: McpLink) -> bool:
        return link.config.allows_tenant(tenant) or self._is_admin(tenant)

    def specs(self, tenant: str) -> list[ToolSpec]:
        """The tools of the servers this tenant may use that are up (or restarting: a call waits for it)."""
        return [
            spec
            for link in self._links.values()
            if link.state in ("up", "starting") and self._may_use(tenant, link)
            for spec in link.tools.values()
        ]

    def status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every server (or those ``tenant`` may use): name, transport, state, tools, last error, restarts."""
        return [
            {
                "name": link.name,
                "transport": link.config.transport,
                "state": link.state,
                "tools": len(link.tools) if link.state in ("up", "starting") else 0,
                "last_error": link.last_error,
                "restarts": link.restarts,
            }
            for link in self._links.values()
            if tenant is None or self._may_use(tenant, link)
        ]

    async def call(self, name: str, arguments: JsonDict, ctx: ToolContext) -> ToolOutcome:
        """Run one call on its server. Never raises (but a caller's cancellation goes through)."""
        server, sep, tool = name.partition("__")
        link = self._links.get(server) if sep else None
        if link is None or not link.config.offers(tool):
            return ToolOutcome(f"unknown tool {name!r}", error=True)
        if not self._may_use(ctx.tenant, link):
            return ToolOutcome(f"tenant {ctx.tenant!r} may not use the tools of MCP server {server!r}", error=True)
        timeout = link.config.timeout_seconds or self._default_timeout
        meta: JsonDict = {"server": server}
        try:
            async with asyncio.timeout(timeout):
                client = await link.ready_client()
                if tool not in link.tools:
                    return ToolOutcome(f"unknown tool {name!r}", error=True, meta=meta)
                result = await client.call_tool(tool, arguments)
        except TimeoutError:
            return ToolOutcome(f"MCP tool {name!r} timed out after {timeout:g}s", error=True, meta=meta)
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                link.mark_broken(f"connection closed during a call of {tool!r}")
                message = f"MCP server {server!r} closed the connection (it is being restarted)"
                return ToolOutcome(message, error=True, meta=meta)
            return ToolOutcome(f"MCP server {server!r} refused the call: {exc.message}", error=True, meta=meta)
        except ServerDown as exc:
            return ToolOutcome(str(exc), error=True, meta=meta)
        except Exception as exc:
            log.warning("mcp call %s failed", name, exc_info=True)
            return ToolOutcome(f"MCP tool {name!r} failed: {describe_error(exc)}", error=True, meta=meta)
        return self._outcome(result, meta)

    def _outcome(self, result: mcp_types.CallToolResult, meta: JsonDict) -> ToolOutcome:
        content = render_result(result)
        cap = self._result_max_chars
        if cap is not None and len(content) > cap:
            meta = {**meta, "truncated": True, "chars": len(content)}
            content = content[:cap]
        return ToolOutcome(content, error=result.is_error, meta=meta)
