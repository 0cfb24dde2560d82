"""In-process in-flight places."""

from __future__ import annotations

from shared_ollama.service.admission.inflight import InflightCounter, LocalInflight


async def test_cap_release_and_count() -> None:
    inflight: InflightCounter = LocalInflight()
    assert await inflight.count("t:text") == 0
    assert await inflight.acquire("t:text", "r1", 2)
    assert await inflight.acquire("t:text", "r2", 2)
    assert not await inflight.acquire("t:text", "r3", 2)
    assert await inflight.count("t:text") == 2
    assert await inflight.acquire("t:vision", "r3", 1)  # keys are independent
    await inflight.release("t:text", "r1")
    assert await inflight.count("t:text") == 1
    assert await inflight.acquire("t:text", "r3", 2)
    assert await inflight.count("t:vision") == 1


async def test_member_idempotence() -> None:
    inflight = LocalInflight()
    assert await inflight.acquire("k", "r1", 3)
    assert await inflight.acquire("k", "r1", 3)
    assert await inflight.count("k") == 1
    await inflight.release("k", "r1")
    await inflight.release("k", "r1")
    await inflight.release("k", "unknown")
    await inflight.release("other", "r1")
    assert await inflight.count("k") == 0


async def test_close_forgets_every_place() -> None:
    inflight = LocalInflight()
    await inflight.start()
    assert await inflight.acquire("k", "r1", 1)
    await inflight.close()
    assert await inflight.count("k") == 0
    assert await inflight.acquire("k", "r2", 1)
