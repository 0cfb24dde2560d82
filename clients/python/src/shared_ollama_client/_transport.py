"""Sending one call, both ways (blocking and asyncio): retried on 429/503 and on connection errors before any
answer, within the call's budget; failures raised as the typed errors. Streams are never retried once their
answer has started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from shared_ollama_client._retry import RetryBudget
from shared_ollama_client._wire import REQUEST_ID_HEADER, RETRY_STATUSES, Call, error_of
from shared_ollama_client.errors import ClientTimeout, ConnectionFailed, InvalidResponse, SharedOllamaError

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""Connection errors that mean the request never reached the service: always safe to send again."""
_NO_ANSWER = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""The connection broke before any answer: sent again only when the call allows (``Call.resend``)."""


def transport_error(exc: httpx.TransportError, base_url: object) -> SharedOllamaError:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return ClientTimeout(f"no answer from the service at {base_url} within the client's timeout ({exc!r})")
    return ConnectionFailed(f"the connection to the service at {base_url} failed: {exc!r}")


def body_error(exc: httpx.TransportError, response: httpx.Response, base_url: object) -> SharedOllamaError:
    """A failure while an answer's body was read (its status had arrived): ``ClientTimeout`` or
    ``ConnectionFailed`` with the answer's request id; never sent again (the service had answered)."""
    failure = transport_error(exc, base_url)
    failure.request_id = response.headers.get(REQUEST_ID_HEADER)
    return failure


def resendable(exc: httpx.TransportError, call: Call) -> bool:
    return isinstance(exc, _NOT_SENT) or (call.resend and isinstance(exc, _NO_ANSWER))


def answered(response: httpx.Response, call: Call) -> bool:
    return response.is_success or response.status_code in call.accept


def retry_wait(error: SharedOllamaError, call: Call, budget: RetryBudget) -> float | None:
    """The wait before trying a refused call again, or ``None`` to raise ``error`` now."""
    if not call.retry or error.status not in RETRY_STATUSES:
        return None
    return budget.next_wait(error.retry_after)


def parsed(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise InvalidResponse(
            f"the service answered with HTTP {response.status_code} but not with JSON: {response.text[:200]!r}",
            status=response.status_code,
        ) from None


def send(http: httpx.Client, call: Call, budget: RetryBudget, sleep: Callable[[float], object]) -> httpx.Response:
    """The call's response, its status a success (its body not read yet: the caller reads and closes it)."""
    while True:
        try:
            response = http.send(http.build_request(call.method, call.path, json=call.body), stream=True)
            if answered(response, call):
                return response
            try:
                response.read()
            finally:
                response.close()
        except httpx.TransportError as exc:
            failure = transport_error(exc, http.base_url)
            wait = budget.next_wait(None) if resendable(exc, call) else None
            if wait is None:
                raise failure from exc
            sleep(wait)
            continue
        error = error_of(response)
        wait = retry_wait(error, call, budget)
        if wait is None:
            raise error
        sleep(wait)


async def send_async(
    http: httpx.AsyncClient, call: Call, budget: RetryBudget, sleep: Callable[[float], Awaitable[object]]
) -> httpx.Response:
    """``send`` for asyncio: cancelling the awaiting task closes the connection."""
    while True:
        try:
            response = await http.send(http.build_request(call.method, call.path, json=call.body), stream=True)
            if answered(response, call):
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            failure = transport_error(exc, http.base_url)
            wait = budget.next_wait(None) if resendable(exc, call) else None
            if wait is None:
                raise failure from exc
            await sleep(wait)
            continue
        error = error_of(response)
        wait = retry_wait(error, call, budget)
        if wait is None:
            raise error
        await sleep(wait)
