"""The MCP provider's pure parts: results as text, the restart budget, refusals before any server is reached."""

from __future__ import annotations

import mcp_types
import pytest

from shared_ollama.service.agents.mcp_config import parse_mcp_config
from shared_ollama.service.agents.mcp_link import RestartBudget, describe_error
from shared_ollama.service.agents.mcp_tools import McpTools, render_result
from shared_ollama.service.agents.tooling import ToolContext


def test_text_blocks_are_joined_and_other_blocks_named() -> None:
    result = mcp_types.CallToolResult(
        content=[
            mcp_types.TextContent(text="first"),
            mcp_types.ImageContent(data="AA==", mime_type="image/png"),
            mcp_types.AudioContent(data="AA==", mime_type="audio/wav"),
            mcp_types.ResourceLink(uri="file:///a.txt", name="a"),
            mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents(uri="file:///b.txt", text="embedded")),
            mcp_types.EmbeddedResource(resource=mcp_types.BlobResourceContents(uri="file:///c.bin", blob="AA==")),
            mcp_types.TextContent(text="last"),
        ]
    )
    assert render_result(result).split("\n") == [
        "first",
        "[image image/png]",
        "[audio audio/wav]",
        "[resource file:///a.txt]",
        "embedded",
        "[resource file:///c.bin]",
        "last",
    ]


def test_structured_content_is_used_only_without_blocks() -> None:
    assert render_result(mcp_types.CallToolResult(content=[], structured_content={"sum": 5})) == '{"sum":5}'
    with_text = mcp_types.CallToolResult(content=[mcp_types.TextContent(text="5")], structured_content={"sum": 5})
    assert render_result(with_text) == "5"


def test_restart_delays_double_per_failure_up_to_the_cap() -> None:
    budget = RestartBudget(first_delay=0.5, max_delay=4.0, per_minute=100)
    assert [budget.delay(failures, now=0.0) for failures in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert budget.delay(10_000, now=0.0) == 4.0


def test_restarts_beyond_the_minute_budget_wait_for_the_window() -> None:
    budget = RestartBudget(first_delay=0.5, max_delay=30.0, per_minute=3)
    for now in (0.0, 1.0, 2.0):
        budget.record_start(now)
    assert budget.delay(0, now=3.0) == pytest.approx(57.0)  # the first start leaves the window at t=60
    assert budget.delay(0, now=60.0) == 0.5
    budget.record_start(60.0)
    assert budget.delay(0, now=61.5) == pytest.approx(0.5)  # starts at 1, 2 and 60: the oldest leaves at 61


def test_describe_error_reaches_into_exception_groups() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [FileNotFoundError("no such file: x")])])
    assert describe_error(group) == "FileNotFoundError: no such file: x"
    assert describe_error(TimeoutError()) == "TimeoutError"


def provider() -> McpTools:
    config = parse_mcp_config(
        {
            "servers": {
                "open": {"command": "unused", "tenants": ["*"]},
                "team": {"command": "unused", "tenants": ["team-a"], "tools": ["add"]},
                "admins": {"command": "unused"},
            }
        }
    )
    return McpTools(config, is_admin=lambda tenant: tenant == "root", default_timeout=1.0)


async def test_calls_are_refused_by_name_tenant_and_allow_list_before_any_server_is_reached() -> None:
    tools = provider()
    guest, team_a = (ToolContext(tenant=name, agent="a") for name in ("guest", "team-a"))

    unknown = await tools.call("nosuch__add", {}, guest)
    assert unknown.error and "unknown tool" in unknown.content
    no_server_part = await tools.call("add", {}, guest)
    assert no_server_part.error and "unknown tool" in no_server_part.content
    not_listed = await tools.call("team__subtract", {}, team_a)
    assert not_listed.error and "unknown tool" in not_listed.content

    for name, ctx in (("team__add", guest), ("admins__x", guest), ("admins__x", team_a)):
        refused = await tools.call(name, {}, ctx)
        assert refused.error and "may not use" in refused.content, (name, ctx.tenant)


def test_status_lists_the_servers_a_tenant_may_use() -> None:
    tools = provider()
    assert [entry["name"] for entry in tools.status()] == ["open", "team", "admins"]
    assert [entry["name"] for entry in tools.status("guest")] == ["open"]
    assert [entry["name"] for entry in tools.status("team-a")] == ["open", "team"]
    assert [entry["name"] for entry in tools.status("root")] == ["open", "team", "admins"]
    assert tools.status()[0] == {
        "name": "open",
        "transport": "stdio",
        "state": "starting",
        "tools": 0,
        "last_error": None,
        "restarts": 0,
    }
    assert tools.specs("root") == []
