"""The toolbox an agent run calls tools through: every provider's tools by name (the first provider wins a
name), arguments checked against the tool's JSON schema before it runs, a time limit, a cap on the result.
``run`` never raises (but a cancelled run cancels its tool)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.agents.tooling import TOOL_NAME, ToolContext, ToolOutcome, ToolProvider, ToolSpec

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 200
"""Longest schema-validation message shown to the model."""


class ToolBox:
    def __init__(
        self,
        providers: Sequence[ToolProvider],
        *,
        timeout: float,
        max_chars: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = tuple(providers)
        self._timeout = timeout
        self._max_chars = max_chars
        self._monotonic = monotonic
        self._warned: set[tuple[str, str]] = set()

    def _table(self, tenant: str) -> dict[str, tuple[ToolSpec, ToolProvider]]:
        table: dict[str, tuple[ToolSpec, ToolProvider]] = {}
        for provider in self._providers:
            for spec in provider.specs(tenant):
                if not TOOL_NAME.match(spec.name):
                    self._warn_once(spec.name, spec.source, "its name is not a valid tool name")
                elif spec.name in table:
                    winner = table[spec.name][0].source
                    self._warn_once(spec.name, spec.source, f"the name is already taken by {winner}")
                else:
                    table[spec.name] = (spec, provider)
        return table

    def _warn_once(self, name: str, source: str, why: str) -> None:
        if (name, source) not in self._warned:
            self._warned.add((name, source))
            log.warning("tool %r from %s is left out: %s", name, source, why)

    def specs(self, tenant: str) -> list[ToolSpec]:
        """Every tool this tenant may use now, each name once."""
        return [spec for spec, _ in self._table(tenant).values()]

    def resolve(self, tenant: str, names: list[str]) -> list[ToolSpec]:
        """The tools ``names`` lists, in order; ``InvalidRequest`` (param ``tools``) naming every unknown one."""
        table = self._table(tenant)
        unknown = [str(name) for name in names if not isinstance(name, str) or name not in table]
        if unknown:
            available = ", ".join(sorted(table)) or "none"
            raise InvalidRequest(f"unknown tools: {', '.join(unknown)} (available: {available})", param="tools")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InvalidRequest(f"tools listed more than once: {', '.join(repeated)}", param="tools")
        return [table[name][0] for name in names]

    async def run(self, tenant: str, name: str, arguments: object, ctx: ToolContext) -> ToolOutcome:
        """One call's outcome: refused, failed, timed out or the tool's result, capped. Never raises (except
        ``CancelledError``)."""
        started = self._monotonic()
        outcome = await self._run(tenant, name, arguments, ctx)
        return self._finish(outcome, self._monotonic() - started)

    async def _run(self, tenant: str, name: str, arguments: object, ctx: ToolContext) -> ToolOutcome:
        entry = self._table(tenant).get(name)
        if entry is None:
            return ToolOutcome(f"unknown tool '{name}': it is not available to this agent", error=True)
        spec, provider = entry
        if not isinstance(arguments, dict):
            return ToolOutcome(f"invalid arguments for {name}: they must be a JSON object", error=True)
        problem = _schema_problem(spec, arguments)
        if problem:
            return ToolOutcome(f"invalid arguments for {name}: {problem}", error=True)
        try:
            async with asyncio.timeout(self._timeout) as deadline:
                outcome = await provider.call(name, arguments, ctx)
        except TimeoutError:
            if not deadline.expired():
                log.warning("tool %s raised TimeoutError", name, exc_info=True)
                return ToolOutcome(f"{name} failed (TimeoutError)", error=True)
            return ToolOutcome(f"{name} timed out after {self._timeout:g} s", error=True)
        except Exception as exc:
            log.warning("tool %s (%s) failed", name, spec.source, exc_info=True)
            return ToolOutcome(f"{name} failed ({type(exc).__name__})", error=True)
        if not isinstance(outcome, ToolOutcome) or not isinstance(outcome.content, str):
            log.warning("tool %s (%s) returned %r, not a ToolOutcome", name, spec.source, type(outcome))
            return ToolOutcome(f"{name} failed (no result)", error=True)
        return outcome

    def _finish(self, outcome: ToolOutcome, seconds: float) -> ToolOutcome:
        meta: dict[str, Any] = dict(outcome.meta)
        content = outcome.content
        extra = len(content) - self._max_chars
        if extra > 0:
            content = f"{content[: self._max_chars]}\n[truncated: {extra} more characters]"
            meta["truncated"] = True
        meta["seconds"] = round(max(seconds, 0.0), 6)
        return ToolOutcome(content, error=outcome.error, meta=meta)


def _schema_problem(spec: ToolSpec, arguments: dict[str, Any]) -> str | None:
    """The first (most relevant) way ``arguments`` break the tool's schema, briefly; None when they fit."""
    from jsonschema import Draft202012Validator  # imported by the first tool call, not at start-up
    from jsonschema.exceptions import SchemaError, best_match

    try:
        error = best_match(Draft202012Validator(spec.parameters).iter_errors(arguments))
    except SchemaError:
        log.warning("tool %s (%s) has an invalid schema", spec.name, spec.source, exc_info=True)
        return "the tool's own schema is invalid"
    if error is None:
        return None
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    message = error.message if len(error.message) <= MAX_ERROR_CHARS else error.message[:MAX_ERROR_CHARS] + "…"
    return f"at {where.lstrip('.')}: {message}" if where else message
