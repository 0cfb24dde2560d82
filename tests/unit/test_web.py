"""The HTTP helpers the adapters and the embedded engine share: the JSON-object body and the disconnect race."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.web import ClientDisconnected, parse_json_object, until_disconnect


@pytest.mark.parametrize(
    ("raw", "words"),
    [(b"", "empty"), (b"  \n", "empty"), (b"{", "malformed JSON"), (b"[1]", "JSON object"), (b'"x"', "JSON object")],
)
def test_a_body_that_is_not_one_json_object_is_a_400_saying_why(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        parse_json_object(raw)


def test_a_json_object_body_is_parsed() -> None:
    assert parse_json_object(b'{"model": "m", "n": 1}') == {"model": "m", "n": 1}


class FakeRequest:
    """A request whose client hangs up when ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_work_finishes_when_the_client_stays() -> None:
    async def work() -> str:
        return "answer"

    assert await until_disconnect(FakeRequest(), work()) == "answer"  # type: ignore[arg-type]


async def test_a_client_that_leaves_cancels_the_work_and_its_cleanup_runs_first() -> None:
    request, started, cleaned = FakeRequest(), asyncio.Event(), []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only the disconnect ends this
        finally:
            cleaned.append("released")

    async def hang_up() -> None:
        await started.wait()
        request.gone.set()

    hanger = asyncio.create_task(hang_up())
    with pytest.raises(ClientDisconnected):
        await until_disconnect(request, work())  # type: ignore[arg-type]
    await hanger
    assert cleaned == ["released"]


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_disconnect() -> None:
    async def run() -> None:
        await until_disconnect(FakeRequest(), asyncio.Event().wait())  # type: ignore[arg-type]

    task = asyncio.create_task(run())
    await asyncio.sleep(0)  # let it start waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_done_before_the_watch_starts_never_reads_the_client() -> None:
    request = FakeRequest()

    async def quick_engine_answer() -> str:
        for _ in range(20):  # several turns of the loop, as an answer from another process takes
            await asyncio.sleep(0)
        return "answer"

    assert await until_disconnect(request, quick_engine_answer()) == "answer"  # type: ignore[arg-type]
    assert request.receives == 0, "no watcher task was started for work this short"
