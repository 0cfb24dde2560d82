"""The MCP servers' config: a good file, the documented example, and every refusal naming server and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared_ollama.service.agents.mcp_config import (
    McpConfigError,
    load_mcp_config,
    parse_mcp_config,
    resolve_mcp_path,
)

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
servers:
  notes:
    command: python
    args: ["-m", "notes"]
    env: {NOTES_DIR: /srv/notes, TOKEN: "${NOTES_TOKEN}"}
    cwd: work
    tenants: ["*"]
    timeout_seconds: 20
    tools: [search, read]
  remote:
    url: http://127.0.0.1:9000/mcp
    headers: {Authorization: "Bearer ${REMOTE_TOKEN}"}
    tenants: [team-a]
  admins-only:
    command: /usr/bin/tool
"""


def test_good_file_parses_every_field(tmp_path: Path) -> None:
    path = tmp_path / "mcp.yaml"
    path.write_text(GOOD)
    config = load_mcp_config(path, environ={"NOTES_TOKEN": "n-secret", "REMOTE_TOKEN": "r-secret"})

    notes, remote, admins = config.servers
    assert (notes.name, notes.transport, notes.command, notes.args) == ("notes", "stdio", "python", ("-m", "notes"))
    assert notes.env == {"NOTES_DIR": "/srv/notes", "TOKEN": "n-secret"}
    assert notes.cwd == tmp_path / "work"
    assert notes.timeout_seconds == 20
    assert notes.tools == ("search", "read")
    assert notes.offers("search") and not notes.offers("delete")
    assert notes.allows_tenant("anyone")

    assert (remote.transport, remote.url) == ("http", "http://127.0.0.1:9000/mcp")
    assert remote.headers == {"Authorization": "Bearer r-secret"}
    assert remote.allows_tenant("team-a") and not remote.allows_tenant("team-b")
    assert remote.timeout_seconds is None and remote.tools is None and remote.offers("anything")

    assert admins.tenants is None
    assert not admins.allows_tenant("team-a")
    assert config.server("remote") is remote and config.server("nope") is None


def test_the_documented_example_parses() -> None:
    config = load_mcp_config(
        ROOT / "config" / "mcp.yaml.example", environ={"NOTES_TOKEN": "x", "REMOTE_MCP_TOKEN": "y"}
    )
    assert [server.name for server in config.servers] == ["notes", "remote"]


def test_empty_file_and_empty_servers_mean_no_servers(tmp_path: Path) -> None:
    path = tmp_path / "mcp.yaml"
    path.write_text("")
    assert load_mcp_config(path).servers == ()
    assert parse_mcp_config({"servers": None}).servers == ()


def test_config_is_frozen() -> None:
    config = parse_mcp_config({"servers": {"a": {"command": "x"}}})
    with pytest.raises(ValueError, match="frozen"):
        config.servers[0].command = "y"  # type: ignore[misc]


def test_resolve_path_prefers_the_setting_then_the_default_file(tmp_path: Path) -> None:
    configured = tmp_path / "elsewhere.yaml"
    assert resolve_mcp_path(configured, tmp_path) == configured
    assert resolve_mcp_path(None, tmp_path) is None
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mcp.yaml").write_text("servers: {}")
    assert resolve_mcp_path(None, tmp_path) == tmp_path / "config" / "mcp.yaml"


def server(**fields: Any) -> dict[str, Any]:
    return {"servers": {"box": fields}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (server(command="x", comand="y"), r"server 'box': field 'comand': unknown key"),
        (server(), r"server 'box': give exactly one of 'command' \(stdio\) or 'url'"),
        (server(command="x", url="http://h/mcp"), r"server 'box': give exactly one of 'command'"),
        (server(url="http://h/mcp", args=["a"]), r"server 'box': 'args', 'env' and 'cwd' go with 'command'"),
        (server(command="x", headers={"A": "b"}), r"server 'box': 'headers' go with 'url'"),
        (server(url="ftp://h/mcp"), r"server 'box': field 'url': must be an http:// or https:// URL"),
        (server(command=""), r"server 'box': field 'command'"),
        (server(command="x", timeout_seconds=0), r"server 'box': field 'timeout_seconds'"),
        (server(command="x", timeout_seconds="soon"), r"server 'box': field 'timeout_seconds'"),
        (server(command="x", env={"N": 1}), r"server 'box': field 'env.N'"),
        (server(command="x", args="-m x"), r"server 'box': field 'args'"),
        (server(command="x", tenants="*"), r"server 'box': field 'tenants'"),
        (server(command="x", tenants=[""]), r"server 'box': field 'tenants': names must not be empty"),
        (server(command="x", tools=[" "]), r"server 'box': field 'tools': names must not be empty"),
        (server(command="x", name="other"), r"server 'box': field 'name': unknown key"),
        (server(command="x", env={"T": "${MISSING_VAR}"}), r"server 'box': field 'env.T': .*MISSING_VAR is not set"),
        ({"servers": {"bad name": {"command": "x"}}}, r"server 'bad name': field 'name': a server's name is"),
        ({"servers": {"a__b": {"command": "x"}}}, r"server 'a__b': field 'name': .*no '__'"),
        ({"servers": {"x" * 33: {"command": "x"}}}, r"field 'name'"),
        ({"servers": {"box": "python"}}, r"server 'box': must be a mapping"),
        ({"servers": ["box"]}, r"'servers' must be a mapping"),
        ({"server": {}}, r"unknown key\(s\) server"),
        (["servers"], r"the top level must be a mapping"),
    ],
)
def test_every_mistake_is_refused_with_server_and_field(raw: Any, expected: str) -> None:
    with pytest.raises(McpConfigError, match=expected):
        parse_mcp_config(raw, environ={})


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(McpConfigError, match=r"missing\.yaml"):
        load_mcp_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("servers: {a: [unclosed")
    with pytest.raises(McpConfigError, match=r"broken\.yaml"):
        load_mcp_config(broken)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("servers: {a: {url: nowhere}}")
    with pytest.raises(McpConfigError, match=r"invalid.yaml: server 'a': field 'url'"):
        load_mcp_config(invalid)
