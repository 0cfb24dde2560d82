"""The built-in tools as one ``ToolProvider``: the same tools for every tenant (``http_get`` only when the
admin allowed some hosts)."""

from __future__ import annotations

import logging
from typing import Any

from shared_ollama.service.agents.tooling import ToolContext, ToolOutcome, ToolSpec
from shared_ollama.service.agents.tools import calculator, documents_tool, http_get
from shared_ollama.service.agents.tools import clock as clock_tool
from shared_ollama.settings import Settings

log = logging.getLogger(__name__)


class BuiltinTools:
    """``calculator``, ``current_time``, ``search_documents`` and, with a non-empty allow-list, ``http_get``."""

    def __init__(
        self,
        *,
        http_allow_hosts: str = "",
        http_max_bytes: int = 1_000_000,
        http_timeout: float = 10.0,
        clock: clock_tool.Clock = clock_tool.utc_now,
        resolve: http_get.Resolve | None = None,
    ) -> None:
        self._clock = clock
        self._http = http_get.HttpGet(
            allow_hosts=http_allow_hosts, max_bytes=http_max_bytes, timeout=http_timeout, resolve=resolve
        )
        self._specs = [calculator.SPEC, clock_tool.SPEC, documents_tool.SPEC]
        if self._http.enabled:
            self._specs.append(http_get.SPEC)

    @classmethod
    def from_settings(cls, settings: Settings) -> BuiltinTools:
        """Configured from the ``agent_http_*`` settings (a malformed allow-list is a ValueError naming it)."""
        return cls(
            http_allow_hosts=settings.agent_http_allow_hosts,
            http_max_bytes=settings.agent_http_max_bytes,
            http_timeout=settings.agent_http_timeout_seconds,
        )

    def specs(self, tenant: str) -> list[ToolSpec]:
        return list(self._specs)

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        try:
            if name == calculator.SPEC.name:
                return calculator.calculate(arguments)
            if name == clock_tool.SPEC.name:
                return clock_tool.current_time(arguments, self._clock)
            if name == documents_tool.SPEC.name:
                return await documents_tool.search_documents(arguments, ctx)
            if name == http_get.SPEC.name and self._http.enabled:
                return await self._http(arguments)
        except Exception:
            log.warning("built-in tool %s failed", name, exc_info=True)
            return ToolOutcome(f"{name}: the tool failed unexpectedly", error=True)
        return ToolOutcome(f"unknown tool '{name}'", error=True)
