"""The fleet's hosts, from ``config/engines.yaml`` or a comma-separated URL list (``SHARED_OLLAMA_ENGINE_URLS``).

The file is a mapping with one key, ``engines``: a non-empty list of hosts, each with ``url`` (the server's root,
``http://`` or ``https://``), ``kind`` (``ollama``: the Ollama API, Ollama or the embedded engine; ``openai``: an
OpenAI-compatible server such as vLLM, llama-server or SGLang), ``slots`` (requests it takes at once), and
optionally ``models`` (what it serves; absent: what it lists), ``weight``, ``api_key`` (sent upstream as a Bearer
token) and ``name`` (default ``host:port``). A URL list gives ``ollama`` hosts with the default slots. Every
mistake is a ``FleetConfigError`` naming the source, the entry (``engines[2]``) and the field; two hosts with the
same name or URL are refused. An ``api_key`` is kept out of every ``repr`` and message, and ``masked_url`` hides a
password written in a URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared_ollama.backends.urls import masked_url
from shared_ollama.protocol.names import canonical_model

DEFAULT_ENGINES_FILE = Path("config/engines.yaml")
HostKind = Literal["ollama", "openai"]
HOST_NAME = re.compile(r"^[A-Za-z0-9\[][A-Za-z0-9._:\[\]-]{0,63}$")
"""A host's name (a metrics label and a path segment of the API): letters, digits and ``. _ : - [ ]``."""
URL_LIST_SOURCE = "SHARED_OLLAMA_ENGINE_URLS"


class FleetConfigError(ValueError):
    """The fleet's configuration is missing, malformed or invalid."""


@dataclass(frozen=True, slots=True)
class Host:
    """One engine host. ``models`` are canonical names (None: whatever the host lists); ``api_key`` never shows
    in ``repr``."""

    name: str
    url: str
    kind: HostKind = "ollama"
    slots: int = 1
    models: tuple[str, ...] | None = None
    weight: float = 1.0
    api_key: str | None = field(default=None, repr=False)

    @property
    def display_url(self) -> str:
        """The URL as it may be shown or logged (a password in it masked)."""
        return masked_url(self.url)

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request to this host (empty without an ``api_key``)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class HostEntry(BaseModel):
    """One entry of ``engines`` as written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    kind: HostKind = "ollama"
    slots: int | None = Field(default=None, ge=1)
    """Requests the host takes at once; absent: the default slots the caller gives."""
    models: tuple[str, ...] | None = Field(default=None, min_length=1)
    weight: float = Field(default=1.0, gt=0)
    api_key: str | None = Field(default=None, min_length=1, repr=False)
    name: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not item.strip() or item != item.strip() for item in value):
            raise ValueError("model names must be non-empty, without surrounding spaces")
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str | None) -> str | None:
        if value is not None and not all("!" <= char <= "~" for char in value):
            raise ValueError("must be printable ASCII without spaces (it is sent as a Bearer token)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not HOST_NAME.match(value):
            raise ValueError("a name is 1-64 of A-Z a-z 0-9 . _ : - [ ] (starting with a letter or digit)")
        return value

    @model_validator(mode="after")
    def _root_url(self) -> HostEntry:
        parts = urlsplit(self.url)
        if self.kind == "openai" and parts.path.endswith("/v1"):
            raise ValueError("field 'url': an openai host's url is the server's root, without '/v1'")
        if self.api_key is not None and parts.username is not None:
            raise ValueError("field 'api_key': give an api_key or credentials in the url, not both")
        return self


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engines: list[Any] = Field(min_length=1)


def check_url(value: str) -> str:
    """An engine URL without its trailing slash; a ``ValueError`` unless it is ``http(s)://host[:port][/path]``
    without query or fragment."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    if port == 0:
        raise ValueError("port 0 is not a port an engine listens on")
    return urlunsplit(parts._replace(path=parts.path.rstrip("/")))


def _identity(url: str) -> tuple[str, str, int, str]:
    """What makes two URLs the same host: scheme, host, port (defaults filled in), path."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname or "", port, parts.path.rstrip("/")


def _default_name(url: str) -> str:
    _, host, port, _ = _identity(url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``field 'x': why`` (the first few), without its URLs and input echoes."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"field '{where}': {message}" if where else message)
    return "; ".join(parts)


def build_hosts(entries: Sequence[HostEntry], *, default_slots: int, source: str) -> tuple[Host, ...]:
    """Hosts from checked entries: names given or derived (``host:port``, then ``-2``, ``-3`` ... for a second
    host on the same address), duplicates of a name or URL refused."""
    taken: dict[str, int] = {}
    seen_urls: dict[tuple[str, str, int, str], int] = {}
    for index, entry in enumerate(entries):
        identity = _identity(entry.url)
        if identity in seen_urls:
            raise FleetConfigError(
                f"invalid engines config {source}: engines[{index}]: field 'url': the same host as "
                f"engines[{seen_urls[identity]}] ({masked_url(entry.url)})"
            )
        seen_urls[identity] = index
        if entry.name is not None:
            if entry.name in taken:
                raise FleetConfigError(
                    f"invalid engines config {source}: engines[{index}]: field 'name': '{entry.name}' is also "
                    f"the name of engines[{taken[entry.name]}]"
                )
            taken[entry.name] = index
    hosts = []
    for index, entry in enumerate(entries):
        name = entry.name
        if name is None:
            base = name = _default_name(entry.url)
            suffix = 2
            while name in taken:
                name, suffix = f"{base}-{suffix}", suffix + 1
            taken[name] = index
        models = None if entry.models is None else tuple(dict.fromkeys(canonical_model(m) for m in entry.models))
        slots = entry.slots if entry.slots is not None else default_slots
        hosts.append(Host(name, entry.url, entry.kind, slots, models, entry.weight, entry.api_key))
    return tuple(hosts)


def parse_fleet_config(raw: Any, *, default_slots: int, source: str = "engines config") -> tuple[Host, ...]:
    """The hosts from the file's parsed YAML (``{"engines": [...]}``)."""
    if default_slots < 1:
        raise ValueError("default_slots must be at least 1")
    if not isinstance(raw, dict):
        raise FleetConfigError(f"invalid engines config {source}: the top level must be a mapping with 'engines'")
    try:
        top = FleetFile.model_validate(raw)
    except ValidationError as exc:
        raise FleetConfigError(f"invalid engines config {source}: {_describe(exc)}") from None
    entries = []
    for index, item in enumerate(top.engines):
        if not isinstance(item, dict):
            raise FleetConfigError(f"invalid engines config {source}: engines[{index}]: must be a mapping of fields")
        try:
            entries.append(HostEntry.model_validate(item))
        except ValidationError as exc:
            raise FleetConfigError(f"invalid engines config {source}: engines[{index}]: {_describe(exc)}") from None
    return build_hosts(entries, default_slots=default_slots, source=source)


def load_fleet_config(path: Path, *, default_slots: int) -> tuple[Host, ...]:
    """The hosts of an engines file; a missing, unreadable, malformed or invalid one is a ``FleetConfigError``."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:  # its own message would quote the line, which may hold an api_key
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise FleetConfigError(f"invalid engines config {path}: not valid YAML{where}: {exc.problem}") from None
    except OSError as exc:
        raise FleetConfigError(f"invalid engines config {path}: {exc.strerror or exc.__class__.__name__}") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FleetConfigError(f"invalid engines config {path}: {exc.__class__.__name__}") from None
    return parse_fleet_config(raw if raw is not None else {}, default_slots=default_slots, source=str(path))


def parse_engine_urls(text: str, *, default_slots: int, source: str = URL_LIST_SOURCE) -> tuple[Host, ...]:
    """``url1,url2,...``: one ``ollama`` host per URL with ``default_slots`` (blank items between commas are
    skipped; none at all is an error)."""
    if default_slots < 1:
        raise ValueError("default_slots must be at least 1")
    items = [item.strip() for item in text.split(",")]
    entries = []
    for index, item in enumerate(item for item in items if item):
        try:
            entries.append(HostEntry(url=item))
        except ValidationError as exc:
            raise FleetConfigError(f"invalid engines config {source}: engines[{index}]: {_describe(exc)}") from None
    if not entries:
        raise FleetConfigError(f"invalid engines config {source}: no URL given")
    return build_hosts(entries, default_slots=default_slots, source=source)
