"""A real MCP server for the agents' tests, built on the official SDK's ``MCPServer`` (``FastMCP`` before mcp 2).

Run it over stdio (the default: ``python tests/support/mcp_server.py``) or over streamable HTTP
(``python tests/support/mcp_server.py --http --port N``, endpoint ``http://127.0.0.1:N/mcp``; ``GET /health``
answers 200 once it is serving). Its tools:

- ``add(a, b)``: the sum of two integers.
- ``lookup(key)``: a planted fact (``PLANTED_FACTS``); an unknown key is a tool error.
- ``hang()``: never returns (a timeout test).
- ``crash()``: exits the process at once, mid-call (a restart test).
- ``big(size)``: ``size`` characters of text (a result-cap test).
- ``fail()``: raises, so the result comes back with ``isError``.
- ``picture()``: one text block and one image block (non-text content).
- ``dotted.name``: valid in MCP, not as a model's function name (skipped by the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import mcp_types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request
from starlette.responses import PlainTextResponse

PLANTED_FACTS = {"zorbia-capital": "The capital of Zorbia is Quillton, founded in 1642."}
"""What ``lookup`` knows; tests assert on these exact strings."""

# A 1x1 transparent PNG, base64.
_PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def build_server() -> MCPServer:
    server = MCPServer("shared-ollama-test-tools", log_level="WARNING")

    @server.tool(description="Add two integers and return the sum.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Look up a fact by its key.")
    def lookup(key: str) -> str:
        if key not in PLANTED_FACTS:
            raise ToolError(f"no fact under {key!r}")
        return PLANTED_FACTS[key]

    @server.tool(description="Never returns.")
    async def hang() -> str:
        await asyncio.Event().wait()
        return "unreachable"

    @server.tool(description="Exit the server process at once.")
    def crash() -> str:
        os._exit(3)

    @server.tool(description="Return a long text of the given size.")
    def big(size: int = 20_000) -> str:
        return "x" * size

    @server.tool(description="Always fails.")
    def fail() -> str:
        raise ToolError("this tool always fails")

    @server.tool(description="A caption and a one-pixel image.")
    def picture() -> list[mcp_types.TextContent | mcp_types.ImageContent]:
        return [
            mcp_types.TextContent(text="a pixel:"),
            mcp_types.ImageContent(data=_PIXEL, mime_type="image/png"),
        ]

    @server.tool(name="dotted.name", description="A name the model's function alphabet does not allow.")
    def dotted() -> str:
        return "dotted"

    @server.custom_route("/health", methods=["GET"])
    async def health(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = build_server()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
