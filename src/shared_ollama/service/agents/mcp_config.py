"""The MCP servers agents may use, from ``config/mcp.yaml`` (``config/mcp.yaml.example`` documents the format).

Each server is a stdio command (``command`` + ``args``, ``env``, ``cwd``) or a streamable-HTTP ``url`` (with
``headers``), and says which tenants may use its tools (``tenants``; ``"*"`` is every tenant; absent means admins
only), its per-call ``timeout_seconds`` and an optional allow-list of its ``tools``. ``${NAME}`` in an ``env`` or
``headers`` value is replaced by the service's environment variable ``NAME`` when the file is loaded, so secrets
need not be written in it. Every mistake is a ``McpConfigError`` naming the file, the server and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_MCP_FILE = Path("config/mcp.yaml")
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
"""A server's name; its tools reach the model as ``<server>__<tool>``, so ``__`` is not allowed in it."""
EVERY_TENANT = "*"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpConfigError(ValueError):
    """The MCP config file is missing, malformed or invalid."""


class McpServerConfig(BaseModel):
    """One MCP server: how to reach it, who may use it, and which of its tools."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    command: str | None = Field(default=None, min_length=1)
    """Stdio: the executable (looked up on PATH), started as a child process of the service."""
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    """Stdio: variables added to the minimal environment the SDK passes (HOME, PATH, ...)."""
    cwd: Path | None = None
    """Stdio: the working directory; a relative path is taken from the config file's directory."""
    url: str | None = None
    """Streamable HTTP: the server's MCP endpoint (``http://`` or ``https://``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Streamable HTTP: headers sent with every request (e.g. ``Authorization``)."""
    tenants: tuple[str, ...] | None = None
    """Who may use its tools: tenant names, or ``"*"`` for every tenant; None (absent) means admins only."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Per call; None means the agents' tool timeout."""
    tools: tuple[str, ...] | None = None
    """The server's tools offered to agents; None means all of them."""

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"

    def allows_tenant(self, tenant: str) -> bool:
        """Whether a (non-admin) tenant may use this server's tools."""
        return self.tenants is not None and (EVERY_TENANT in self.tenants or tenant in self.tenants)

    def offers(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SERVER_NAME.match(value) or "__" in value:
            raise ValueError("a server's name is 1-32 of A-Z a-z 0-9 _ - (and no '__')")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("tenants", "tools")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not item.strip() for item in value):
            raise ValueError("names must not be empty")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd is not None):
            raise ValueError("'args', 'env' and 'cwd' go with 'command', not with 'url'")
        if self.command is not None and self.headers:
            raise ValueError("'headers' go with 'url', not with 'command'")
        return self


class McpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: tuple[McpServerConfig, ...] = ()

    def server(self, name: str) -> McpServerConfig | None:
        return next((server for server in self.servers if server.name == name), None)


def resolve_mcp_path(configured: Path | None, cwd: Path) -> Path | None:
    """The MCP config in force: the setting (which must exist), else ``config/mcp.yaml`` under ``cwd`` if any."""
    if configured is not None:
        return configured
    default = cwd / DEFAULT_MCP_FILE
    return default if default.is_file() else None


def load_mcp_config(path: Path, environ: Mapping[str, str] | None = None) -> McpConfig:
    """Read and check the file; ``environ`` (default: the process's) fills ``${NAME}`` in env and headers."""
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise McpConfigError(f"invalid MCP config {path}: {exc}") from exc
    return parse_mcp_config(raw, source=str(path), base_dir=path.parent, environ=environ)


def parse_mcp_config(
    raw: Any, *, source: str = "MCP config", base_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> McpConfig:
    """The config from its parsed YAML; ``base_dir`` anchors relative ``cwd`` paths."""
    env = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise McpConfigError(f"invalid MCP config {source}: the top level must be a mapping with 'servers'")
    unknown = sorted(str(key) for key in raw if key != "servers")
    if unknown:
        raise McpConfigError(f"invalid MCP config {source}: unknown key(s) {', '.join(unknown)} (only 'servers')")
    servers_raw = raw.get("servers") or {}
    if not isinstance(servers_raw, dict):
        raise McpConfigError(f"invalid MCP config {source}: 'servers' must be a mapping of name to server")
    servers = [_parse_server(name, entry, source, base_dir, env) for name, entry in servers_raw.items()]
    return McpConfig(servers=tuple(servers))


def _parse_server(
    name: Any, entry: Any, source: str, base_dir: Path | None, environ: Mapping[str, str]
) -> McpServerConfig:
    where = f"invalid MCP config {source}: server '{name}'"
    if not isinstance(entry, dict):
        raise McpConfigError(f"{where}: must be a mapping of its fields")
    if "name" in entry:
        raise McpConfigError(f"{where}: field 'name': unknown key (the server's name is its key under 'servers')")
    try:
        server = McpServerConfig.model_validate({**entry, "name": str(name)})
    except ValidationError as exc:
        raise McpConfigError(f"{where}: {_describe(exc)}") from None
    updates: dict[str, Any] = {}
    for field in ("env", "headers"):
        values: dict[str, str] = getattr(server, field)
        expanded = {key: _expand(value, f"{where}: field '{field}.{key}'", environ) for key, value in values.items()}
        if expanded != values:
            updates[field] = expanded
    if server.cwd is not None and not server.cwd.is_absolute() and base_dir is not None:
        updates["cwd"] = base_dir / server.cwd
    return server.model_copy(update=updates) if updates else server


def _expand(value: str, where: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in environ:
            raise McpConfigError(f"{where}: environment variable {variable} is not set")
        return environ[variable]

    return _ENV_REF.sub(replace, value)


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field 'x': why`` (the first few), without its URLs and input echoes."""
    parts = []
    for error in exc.errors()[:3]:
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"field '{field}': {message}" if field else message)
    return "; ".join(parts)
