"""The ``search_documents`` tool: semantic search over the calling agent's own documents (``ToolContext.search``)."""

from __future__ import annotations

from typing import Any

from shared_ollama.service.agents.tooling import Hit, ToolContext, ToolOutcome, ToolSpec

DEFAULT_K = 4
MAX_K = 10

SPEC = ToolSpec(
    name="search_documents",
    description=(
        "Search the documents attached to this agent and return the passages most related to the query, with "
        "their titles and similarity scores. Use it to look up facts before answering."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "What to look for, in a few words or a question.",
                "minLength": 1,
                "maxLength": 2000,
            },
            "k": {
                "type": "integer",
                "description": f"How many passages to return (1 to {MAX_K}, default {DEFAULT_K}).",
                "minimum": 1,
                "maximum": MAX_K,
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)


def format_hits(hits: list[Hit]) -> str:
    """The passages, most similar first: ``[n] title (score 0.83)`` then the passage."""
    if not hits:
        return "No passage matches the query."
    ordered = sorted(hits, key=lambda hit: hit.score, reverse=True)
    blocks = [
        f"[{n}] {hit.title or hit.document_id} (score {hit.score:.2f})\n{' '.join(hit.text.split())}"
        for n, hit in enumerate(ordered, start=1)
    ]
    return "\n\n".join(blocks)


async def search_documents(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    if ctx.search is None:
        return ToolOutcome("search_documents: this agent has no documents to search.", error=True)
    query = str(arguments["query"]).strip()
    if not query:
        return ToolOutcome("search_documents: the query is empty.", error=True)
    k = int(arguments.get("k", DEFAULT_K))
    hits = sorted(await ctx.search(query, k), key=lambda hit: hit.score, reverse=True)[:k]
    return ToolOutcome(format_hits(hits), meta={"hits": len(hits)})
