"""The built-in tools' provider: which tools exist, their schemas, and calls through the toolbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator

from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import TOOL_NAME, Hit, ToolContext
from shared_ollama.service.agents.tools.builtin import BuiltinTools
from shared_ollama.settings import Settings

CTX = ToolContext(tenant="acme", agent="helper")


def names(tools: BuiltinTools, tenant: str = "acme") -> list[str]:
    return [spec.name for spec in tools.specs(tenant)]


def test_http_get_exists_only_with_an_allow_list() -> None:
    assert names(BuiltinTools()) == ["calculator", "current_time", "search_documents"]
    with_hosts = BuiltinTools(http_allow_hosts="example.com")
    assert names(with_hosts, "acme") == names(with_hosts, "globex")
    assert names(with_hosts) == ["calculator", "current_time", "search_documents", "http_get"]


def test_every_schema_is_a_valid_object_schema_with_a_description() -> None:
    for spec in BuiltinTools(http_allow_hosts="example.com").specs("acme"):
        Draft202012Validator.check_schema(spec.parameters)
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False
        assert TOOL_NAME.match(spec.name)
        assert spec.source == "builtin"
        assert len(spec.description) > 40
        assert all(prop.get("description") for prop in spec.parameters["properties"].values())


@pytest.mark.usefixtures("isolated_env")
def test_from_settings_reads_the_allow_list() -> None:
    assert "http_get" in names(BuiltinTools.from_settings(Settings(agent_http_allow_hosts="example.com:8080")))
    assert "http_get" not in names(BuiltinTools.from_settings(Settings()))
    with pytest.raises(ValueError, match="agent_http_allow_hosts"):
        BuiltinTools.from_settings(Settings(agent_http_allow_hosts="http://example.com/"))


async def test_calls_through_the_toolbox() -> None:
    def clock() -> datetime:
        return datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

    async def search(query: str, k: int) -> list[Hit]:
        return [Hit("d", "Notes", f"about {query}", 0.5)]

    toolbox = ToolBox([BuiltinTools(clock=clock)], timeout=5, max_chars=1000)
    assert (await toolbox.run("acme", "calculator", {"expression": "17 * 23"}, CTX)).content == "391"
    assert (await toolbox.run("acme", "current_time", {}, CTX)).content == "2024-01-01T12:00:00+00:00 (Monday, UTC)"
    found = await toolbox.run("acme", "search_documents", {"query": "cats"}, ToolContext("acme", "a", search=search))
    assert found.content == "[1] Notes (score 0.50)\nabout cats"
    refused = await toolbox.run("acme", "calculator", {"expression": 17}, CTX)
    assert refused.error is True
    assert "not of type 'string'" in refused.content
    off = await toolbox.run("acme", "http_get", {"url": "http://example.com/"}, CTX)
    assert (off.error, off.content) == (True, "unknown tool 'http_get': it is not available to this agent")


async def test_a_failing_search_is_an_error_outcome_not_an_exception() -> None:
    async def broken(query: str, k: int) -> list[Hit]:
        raise RuntimeError("vector store gone")

    outcome = await BuiltinTools().call("search_documents", {"query": "x"}, ToolContext("acme", "a", search=broken))
    assert (outcome.error, outcome.content) == (True, "search_documents: the tool failed unexpectedly")
    unknown = await BuiltinTools().call("http_get", {"url": "http://example.com/"}, CTX)
    assert (unknown.error, unknown.content) == (True, "unknown tool 'http_get'")
