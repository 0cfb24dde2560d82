"""What every tool provider (built-in tools, MCP servers) speaks: a tool's description, the context a call runs
in, and its outcome. A provider never raises out of ``call``: a failure is an outcome the model sees."""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

JsonDict = dict[str, Any]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A tool's name as the model sees it (OpenAI's and Ollama's function-name alphabet)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    """The name the model calls it by (``TOOL_NAME``); an MCP server's tools are ``<server>__<tool>``."""
    description: str
    parameters: JsonDict
    """A JSON schema of an object: the call's arguments are validated against it before the tool runs."""
    source: str = "builtin"
    """``builtin`` or ``mcp:<server>``."""

    def as_ollama_tool(self) -> JsonDict:
        """The tool in Ollama's ``tools`` format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.schema()},
        }

    def schema(self) -> JsonDict:
        """A copy of ``parameters`` (request bodies are changed in place downstream; the spec is shared)."""
        return copy.deepcopy(self.parameters)


@dataclass(frozen=True, slots=True)
class Hit:
    """One passage found by ``search_documents``."""

    document_id: str
    title: str
    text: str
    score: float
    """Cosine similarity, higher is closer (1 - cosine distance)."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who is calling: the tool may only see this tenant's and agent's data."""

    tenant: str
    agent: str
    search: Callable[[str, int], Awaitable[list[Hit]]] | None = None
    """Semantic search over the agent's documents (query, k); None when the agent has none to search."""


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    content: str
    """What goes back to the model (already capped to the result limit)."""
    error: bool = False
    """The call failed (bad arguments, timeout, crash, refusal): ``content`` says why, for the model."""
    meta: JsonDict = field(default_factory=dict)
    """For the run's transcript only (e.g. ``truncated``, ``seconds``), never sent to the model."""


class ToolProvider(Protocol):
    """A source of tools (the built-ins, one per MCP server set)."""

    def specs(self, tenant: str) -> list[ToolSpec]:
        """The tools this tenant may use, now."""
        ...

    async def call(self, name: str, arguments: JsonDict, ctx: ToolContext) -> ToolOutcome:
        """Run one call (arguments already validated against the tool's schema). Never raises."""
        ...
