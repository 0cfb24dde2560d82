"""What the gateway does with an engine's answer once its request is admitted: a deadline that ends it
(``overtime``), its token counts and timings into the request's record (``account``), a stored answer replayed as
a stream (``replay``), and a live stream bounded by the deadline (``within``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import orjson

from shared_ollama.errors import BackendUnavailable, RequestTimeout
from shared_ollama.service.admission.context import RequestContext
from shared_ollama.service.admission.deadline import StreamDeadline
from shared_ollama.service.admission.gate import Admitted
from shared_ollama.service.observability.records import RequestRecord


def overtime(admitted: Admitted) -> RequestTimeout:
    seconds = admitted.deadline - admitted.ticket.enqueued_at
    return RequestTimeout(f"the request did not finish within its {seconds:.3g} s deadline")


def account(record: RequestRecord, final: object) -> None:
    """Token counts and the engine's timings from a final answer (chat, generate or embed)."""
    if not isinstance(final, dict):
        return
    record.prompt_tokens = int(final.get("prompt_eval_count") or 0)
    record.completion_tokens = int(final.get("eval_count") or 0)
    record.eval_seconds = (final.get("eval_duration") or 0) / 1e9
    record.load_seconds = (final.get("load_duration") or 0) / 1e9
    record.engine_seconds = (final.get("total_duration") or 0) / 1e9


async def replay(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


async def within(
    lines: AsyncIterator[bytes],
    admitted: Admitted,
    ctx: RequestContext,
    completed: list[bytes] | None = None,
    broken: Callable[[str], None] | None = None,
) -> AsyncIterator[bytes]:
    """The engine's lines until the request's deadline (past it, ``request_timeout`` ends the stream);
    the first line's time and the final line's counts go into the request's record. With ``completed``, the
    lines of a stream that ran to its end are left there (for the cache); a cut-off stream leaves nothing.
    ``broken`` hears of a connection to the engine lost mid-stream (a fleet host's failure); the error goes on
    to the client as the stream's one error frame, never re-run."""
    iterator = aiter(lines)
    seen: list[bytes] = []
    first = True
    deadline = StreamDeadline(admitted.remaining())  # one timer for the stream, not one per line
    try:
        while True:
            try:
                line = await deadline.next(iterator)
            except StopAsyncIteration:
                if completed is not None:
                    completed.extend(seen)
                return
            except TimeoutError:
                raise overtime(admitted) from None
            except BackendUnavailable as exc:
                if broken is not None:
                    broken(exc.message)
                raise
            if first:
                ctx.record.ttft = time.perf_counter() - ctx.started
                first = False
            if b'"done":true' in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    account(ctx.record, orjson.loads(line))
            if completed is not None:
                seen.append(line)
            yield line
    finally:
        deadline.close()
