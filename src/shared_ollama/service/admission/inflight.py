"""Per-tenant in-flight places: counted in process, or shared by every gateway replica through Redis.

A place is held by one request (``member``, its request id) under a key such as ``tenant:text``. ``acquire``
takes a place only while fewer than ``cap`` are held; ``release`` gives it back. The Redis implementation
(``service/admission/inflight_redis.py``) gives every place a lease that its replica refreshes while the request runs,
so a replica that crashes cannot hold a tenant's places forever.
"""

from __future__ import annotations

from typing import Protocol


class InflightCounter(Protocol):
    remote: bool
    """True when acquire and release talk to another process (a cancellation can interrupt them)."""

    async def acquire(self, key: str, member: str, cap: int) -> bool:
        """Take a place under ``key`` for ``member`` if fewer than ``cap`` are held; False when full."""
        ...

    async def release(self, key: str, member: str) -> None:
        """Give ``member``'s place back (no-op when it holds none)."""
        ...

    async def count(self, key: str) -> int:
        """Places held under ``key`` now (by every replica when shared)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalInflight:
    """In-process places: the embedded default for a single gateway process."""

    remote = False

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def acquire(self, key: str, member: str, cap: int) -> bool:
        members = self._held.setdefault(key, set())
        if len(members) >= cap:
            return False
        members.add(member)
        return True

    async def release(self, key: str, member: str) -> None:
        members = self._held.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._held[key]

    async def count(self, key: str) -> int:
        return len(self._held.get(key, ()))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._held.clear()
