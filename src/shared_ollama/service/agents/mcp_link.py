"""One MCP server's connection, held open by a task of its own and restarted when it ends.

The SDK's transports and ``Client`` are context managers that must be entered and left in the same task, so
``McpLink.run`` is that task: it connects (stdio child process or streamable HTTP), lists the tools, then holds
the session until the server goes away or the link is stopped, and starts again after a backoff
(``RestartBudget``: doubling delays, at most ``per_minute`` starts a minute). Calls are made from the callers' own
tasks on the open session (the SDK matches concurrent requests by their JSON-RPC ids). The end of the server's
message stream (a crashed stdio server) is seen at once by a thin wrapper around the transport's read stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TextIO

import anyio
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from shared_ollama import __version__
from shared_ollama.service.agents.mcp_config import McpServerConfig
from shared_ollama.service.agents.tooling import TOOL_NAME, ToolSpec

log = logging.getLogger(__name__)

State = Literal["starting", "up", "down", "stopped"]
LIST_PAGES_MAX = 50
"""Pages of ``tools/list`` read at most (a server that paginates forever cannot hang a start)."""
WINDOW_SECONDS = 60.0


@dataclass(slots=True)
class RestartBudget:
    """When to start a server again: ``first_delay`` doubled per failed start in a row, capped at ``max_delay``,
    and never more than ``per_minute`` starts within a minute."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    per_minute: int = 5
    _starts: deque[float] = field(default_factory=deque)

    def record_start(self, now: float) -> None:
        self._starts.append(now)

    def delay(self, failures: int, now: float) -> float:
        """Seconds to wait before the next start; ``failures`` counts failed starts in a row (0 after a
        server that was up went away)."""
        while self._starts and self._starts[0] <= now - WINDOW_SECONDS:
            self._starts.popleft()
        wait = min(self.max_delay, self.first_delay * 2 ** min(failures, 30))
        if len(self._starts) >= self.per_minute:
            wait = max(wait, self._starts[0] + WINDOW_SECONDS - now)
        return wait


class ServerDown(Exception):
    """The server is down (its start failed) or stopped: a call cannot wait for it."""


class _EndWatch:
    """The transport's read stream, telling the link when it ends (the server exited or hung up)."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _EndWatch:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _EndWatch:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@asynccontextmanager
async def _watched(transport: Transport, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    async with transport as (read_stream, write_stream):
        yield _EndWatch(read_stream, on_end), write_stream


def describe_error(exc: BaseException) -> str:
    """A short reason for logs and status: the first leaf of an exception group, with its type."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


class McpLink:
    """One configured server: its state, its tools as the model sees them, and its open session."""

    def __init__(
        self,
        config: McpServerConfig,
        *,
        budget: RestartBudget,
        start_timeout: float,
        log_dir: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.state: State = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self.tools: dict[str, ToolSpec] = {}
        """The offered tools by the server's own name for them."""
        self._budget = budget
        self._start_timeout = start_timeout
        self._log_dir = log_dir
        self._clock = clock
        self._client: Client | None = None
        self._changed = asyncio.Event()
        """Set (and replaced) whenever ``state`` changes: callers waiting for a start wake up."""
        self._settled = asyncio.Event()
        self._ended = asyncio.Event()
        """The current session's end: the server went away, a call found it closed, or ``stop``."""
        self._stop = asyncio.Event()

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self) -> None:
        """Connect, serve, reconnect, until ``stop``."""
        failures = 0
        while not self._stop.is_set():
            self._budget.record_start(self._clock())
            self._ended = asyncio.Event()
            was_up = await self._session()
            self._settled.set()
            if self._stop.is_set():
                break
            failures = 0 if was_up else failures + 1
            self.restarts += 1
            delay = self._budget.delay(failures, self._clock())
            # A server that was up and went away is restarting at once; one that cannot start is down.
            if was_up and delay <= self._budget.first_delay:
                self._set_state("starting")
            else:
                self.tools = {}
                self._set_state("down")
            log.warning("mcp server %s: %s; starting it again in %.1fs", self.name, self.last_error, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()
            if not self._stop.is_set():
                self._set_state("starting")
        self._set_state("stopped")

    def stop(self) -> None:
        """Ask ``run`` to close the session (a stdio server's process is stopped with it) and return."""
        self._stop.set()
        self._ended.set()
        self._set_state("stopped")

    def mark_broken(self, reason: str) -> None:
        """A call found the connection closed: stop using it now (``run`` restarts the server)."""
        if self._client is not None and not self._stop.is_set():
            self.last_error = reason
            self._went_away()

    async def wait_settled(self) -> None:
        """Until the first start has succeeded or failed."""
        await self._settled.wait()

    async def ready_client(self) -> Client:
        """The open session, waiting for a start in progress; ``ServerDown`` when it is down."""
        while True:
            if self._client is not None and self.state == "up":
                return self._client
            if self.state in ("down", "stopped"):
                raise ServerDown(f"MCP server '{self.name}' is {self.state}: {self.last_error or 'not started'}")
            changed = self._changed
            await changed.wait()

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self._changed.set()
            self._changed = asyncio.Event()

    def _went_away(self) -> None:
        self._client = None
        if not self._stop.is_set():
            self._set_state("starting")
        self._ended.set()

    async def _session(self) -> bool:
        """One connection: True when it got up (listed its tools) before it ended."""
        up = False
        try:
            with anyio.fail_after(self._start_timeout) as start_scope:
                async with AsyncExitStack() as stack:
                    transport = _watched(await self._transport(stack), self._went_away)
                    info = mcp_types.Implementation(name="shared-ollama", version=__version__)
                    client = await stack.enter_async_context(Client(transport, cache=None, client_info=info))
                    self.tools = await self._list_tools(client)
                    start_scope.deadline = math.inf
                    if self._ended.is_set():
                        return False
                    self._client, self.last_error, up = client, None, True
                    self._set_state("up")
                    self._settled.set()
                    log.info("mcp server %s up with %d tools", self.name, len(self.tools))
                    await self._ended.wait()
                    self._client = None
                    if not self._stop.is_set() and self.last_error is None:
                        self.last_error = "the server closed the connection"
        except TimeoutError:
            self.last_error = f"not up within {self._start_timeout:g}s"
        except Exception as exc:
            self.last_error = describe_error(exc)
        finally:
            self._client = None
        return up

    async def _transport(self, stack: AsyncExitStack) -> Transport:
        config = self.config
        if config.command is not None:
            params = StdioServerParameters(
                command=config.command, args=list(config.args), env=dict(config.env) or None, cwd=config.cwd
            )
            return stdio_client(params, errlog=stack.enter_context(self._errlog()))
        assert config.url is not None
        http = await stack.enter_async_context(create_mcp_http_client(headers=dict(config.headers) or None))
        return streamable_http_client(config.url, http_client=http)

    def _errlog(self) -> TextIO:
        """Where a stdio server's stderr goes (closed by the session's exit stack): ``<log_dir>/mcp-<name>.log``,
        else nowhere."""
        if self._log_dir is None:
            return open(os.devnull, "w")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return open(self._log_dir / f"mcp-{self.name}.log", "a")

    async def _list_tools(self, client: Client) -> dict[str, ToolSpec]:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(LIST_PAGES_MAX):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        tools: dict[str, ToolSpec] = {}
        for tool in listed:
            if not self.config.offers(tool.name):
                continue
            full_name = f"{self.name}__{tool.name}"
            if not TOOL_NAME.match(full_name):
                log.warning(
                    "mcp server %s: tool %r skipped: %r is not a valid function name", self.name, tool.name, full_name
                )
                continue
            tools[tool.name] = ToolSpec(
                name=full_name,
                description=tool.description or tool.title or tool.name,
                parameters=tool.input_schema,
                source=f"mcp:{self.name}",
            )
        return tools
