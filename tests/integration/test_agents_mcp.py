"""MCP servers as agent tools, against a real MCP server (tests/support/mcp_server.py, the official SDK's server)
started by ``McpTools`` over stdio, and once over streamable HTTP: listing, calls, tenants, a hung server, a crashed
one, a missing one, and no process left behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shared_ollama.service.agents.mcp_config import parse_mcp_config
from shared_ollama.service.agents.mcp_tools import McpTools
from shared_ollama.service.agents.tooling import ToolContext
from tests.support.mcp_server import PLANTED_FACTS
from tests.support.processes import free_port, stop, wait_http_ok

SERVER_SCRIPT = str(Path(__file__).resolve().parents[1] / "support" / "mcp_server.py")
START_LIMIT = 60.0
"""Seconds for every server's first start (a Python process importing the SDK, on a shared machine)."""
GUEST, TEAM_A, ADMIN = (ToolContext(tenant=name, agent="agent") for name in ("guest", "team-a", "ops"))
TOOLS = {"add", "lookup", "hang", "crash", "big", "fail", "picture"}

Start = Callable[..., Awaitable[McpTools]]


def stdio(**fields: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [SERVER_SCRIPT], **fields}


def server_processes() -> list[psutil.Process]:
    """This test process's children running the test MCP server."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if SERVER_SCRIPT in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
async def start_tools(tmp_path: Path) -> AsyncIterator[Start]:
    """Builds and starts ``McpTools`` over the given servers, waits for their first start, closes them after."""
    started: list[McpTools] = []

    async def start(servers: dict[str, Any], **options: Any) -> McpTools:
        tools = McpTools(
            parse_mcp_config({"servers": servers}),
            is_admin=lambda tenant: tenant == "ops",
            default_timeout=30.0,
            log_dir=tmp_path / "logs",
            **options,
        )
        started.append(tools)
        await tools.start()
        async with asyncio.timeout(START_LIMIT):
            await tools.wait_settled()
        return tools

    yield start
    for tools in started:
        await tools.close()


def states(tools: McpTools) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in tools.status()}


async def test_tools_are_listed_and_called(start_tools: Start) -> None:
    tools = await start_tools({"box": stdio(tenants=["*"])}, result_max_chars=1000)
    assert states(tools) == {"box": "up"}

    specs = {spec.name: spec for spec in tools.specs("guest")}
    assert set(specs) == {f"box__{name}" for name in TOOLS}  # "dotted.name" is no function name: skipped
    add = specs["box__add"]
    assert add.source == "mcp:box"
    assert add.description == "Add two integers and return the sum."
    assert add.parameters["type"] == "object" and set(add.parameters["required"]) == {"a", "b"}
    assert tools.status()[0]["tools"] == len(TOOLS)

    added = await tools.call("box__add", {"a": 2, "b": 3}, GUEST)
    assert (added.content, added.error) == ("5", False)
    fact = await tools.call("box__lookup", {"key": "zorbia-capital"}, GUEST)
    assert (fact.content, fact.error) == (PLANTED_FACTS["zorbia-capital"], False)

    failed = await tools.call("box__fail", {}, GUEST)
    assert failed.error and "this tool always fails" in failed.content
    missing = await tools.call("box__lookup", {"key": "nowhere"}, GUEST)
    assert missing.error and "no fact under 'nowhere'" in missing.content

    picture = await tools.call("box__picture", {}, GUEST)
    assert (picture.content, picture.error) == ("a pixel:\n[image image/png]", False)
    big = await tools.call("box__big", {"size": 5000}, GUEST)
    assert big.content == "x" * 1000 and big.meta["truncated"] and big.meta["chars"] == 5000

    unknown = await tools.call("box__dotted.name", {}, GUEST)
    assert unknown.error and "unknown tool" in unknown.content


async def test_concurrent_calls_share_one_session(start_tools: Start) -> None:
    tools = await start_tools({"box": stdio(tenants=["*"])})
    outcomes = await asyncio.gather(*(tools.call("box__add", {"a": n, "b": n}, GUEST) for n in range(8)))
    assert [outcome.content for outcome in outcomes] == [str(2 * n) for n in range(8)]
    assert len(server_processes()) == 1


async def test_tenants_and_allow_list_decide_who_sees_what(start_tools: Start) -> None:
    tools = await start_tools(
        {
            "open": stdio(tenants=["*"], tools=["add", "lookup"]),
            "team": stdio(tenants=["team-a"]),
        }
    )
    assert states(tools) == {"open": "up", "team": "up"}

    assert {spec.name for spec in tools.specs("guest")} == {"open__add", "open__lookup"}
    team_names = {spec.name for spec in tools.specs("team-a")}
    assert {"open__add", "open__lookup", "team__add", "team__crash"} <= team_names
    assert "open__hang" not in team_names
    assert {spec.name for spec in tools.specs("ops")} == team_names  # an admin may use every server

    refused = await tools.call("team__add", {"a": 1, "b": 1}, GUEST)
    assert refused.error and "may not use" in refused.content
    outside_allow_list = await tools.call("open__hang", {}, TEAM_A)
    assert outside_allow_list.error and "unknown tool" in outside_allow_list.content
    assert (await tools.call("team__add", {"a": 1, "b": 1}, TEAM_A)).content == "2"
    assert (await tools.call("team__add", {"a": 1, "b": 2}, ADMIN)).content == "3"
    assert [entry["name"] for entry in tools.status("guest")] == ["open"]


async def test_a_hung_call_times_out_and_the_server_keeps_serving(start_tools: Start) -> None:
    tools = await start_tools({"box": stdio(tenants=["*"], timeout_seconds=1)})

    hung = await tools.call("box__hang", {}, GUEST)
    assert hung.error and hung.content == "MCP tool 'box__hang' timed out after 1s"

    after = await tools.call("box__add", {"a": 20, "b": 22}, GUEST)
    assert (after.content, after.error) == ("42", False)
    assert states(tools) == {"box": "up"}


async def test_a_crashed_server_is_an_error_then_restarted(start_tools: Start) -> None:
    tools = await start_tools({"box": stdio(tenants=["*"])})
    [first] = server_processes()

    crashed = await tools.call("box__crash", {}, GUEST)
    assert crashed.error and "closed the connection" in crashed.content
    assert states(tools) in ({"box": "starting"}, {"box": "up"})

    again = await tools.call("box__add", {"a": 2, "b": 4}, GUEST)  # waits for the restart, within its timeout
    assert (again.content, again.error) == ("6", False)
    [entry] = tools.status()
    assert (entry["state"], entry["restarts"]) == ("up", 1)
    assert entry["last_error"] is None
    [second] = server_processes()  # the crashed one is gone (a zombie has no command line)
    assert second.pid != first.pid


async def test_close_stops_every_server_process_even_mid_call(start_tools: Start) -> None:
    tools = await start_tools({"one": stdio(tenants=["*"]), "two": stdio(tenants=["*"])})
    processes = server_processes()
    assert len(processes) == 2

    in_flight = asyncio.create_task(tools.call("one__hang", {}, GUEST))
    assert (await tools.call("two__add", {"a": 1, "b": 1}, GUEST)).content == "2"  # the hang call is under way
    await tools.close()

    outcome = await asyncio.wait_for(in_flight, timeout=30)
    assert outcome.error
    gone, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == [] and len(gone) == 2
    assert server_processes() == []
    assert states(tools) == {"one": "stopped", "two": "stopped"}
    late = await tools.call("two__add", {"a": 1, "b": 1}, GUEST)
    assert late.error and "stopped" in late.content


async def test_a_server_that_cannot_start_is_down_and_the_others_work(start_tools: Start, tmp_path: Path) -> None:
    tools = await start_tools(
        {"gone": {"command": str(tmp_path / "no-such-server"), "tenants": ["*"]}, "box": stdio(tenants=["*"])}
    )
    status = {entry["name"]: entry for entry in tools.status()}
    assert status["gone"]["state"] == "down" and "no-such-server" in status["gone"]["last_error"]
    assert status["box"]["state"] == "up"
    assert all(spec.source == "mcp:box" for spec in tools.specs("guest"))

    down = await tools.call("gone__add", {"a": 1, "b": 1}, GUEST)
    assert down.error and "MCP server 'gone' is down" in down.content
    assert (await tools.call("box__add", {"a": 1, "b": 1}, GUEST)).content == "2"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """The same MCP server over streamable HTTP on a free loopback port; yields its MCP endpoint."""
    port = free_port()
    with open(tmp_path / "mcp-http.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, SERVER_SCRIPT, "--http", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/health", proc, timeout=START_LIMIT)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


async def test_a_streamable_http_server_is_reached_through_its_url(start_tools: Start, http_server: str) -> None:
    tools = await start_tools(
        {"remote": {"url": http_server, "headers": {"X-Client": "tests"}, "tenants": ["team-a"], "timeout_seconds": 1}}
    )
    assert tools.status() == [
        {"name": "remote", "transport": "http", "state": "up", "tools": len(TOOLS), "last_error": None, "restarts": 0}
    ]
    assert tools.specs("guest") == []
    assert {spec.name for spec in tools.specs("team-a")} == {f"remote__{name}" for name in TOOLS}

    fact = await tools.call("remote__lookup", {"key": "zorbia-capital"}, TEAM_A)
    assert (fact.content, fact.error) == (PLANTED_FACTS["zorbia-capital"], False)
    hung = await tools.call("remote__hang", {}, TEAM_A)
    assert hung.error and "timed out after 1s" in hung.content
    assert (await tools.call("remote__add", {"a": 3, "b": 4}, TEAM_A)).content == "7"
