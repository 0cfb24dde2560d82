"""The memory manager with a fake engine, clock and memory reading."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared_ollama.service.models.memory import MemoryManager


@dataclass
class FakeEngine:
    models: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)

    async def loaded(self) -> list[str]:
        return list(self.models)

    async def unload(self, model: str) -> None:
        self.models.remove(model)
        self.unloaded.append(model)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(engine: FakeEngine, clock: Clock, memory: list[float], busy: set[str] | None = None) -> MemoryManager:
    timeouts = {"pinned:big": 3600.0}
    return MemoryManager(
        loaded=engine.loaded,
        unload=engine.unload,
        busy=lambda: busy or set(),
        idle_timeout=lambda m: timeouts.get(m, 300.0),
        read_memory=lambda: memory[0],
        clock=clock,
    )


async def test_idle_models_are_unloaded_after_their_timeout() -> None:
    engine, clock, memory = FakeEngine(["a", "b", "pinned:big"]), Clock(), [40.0]
    mm = manager(engine, clock, memory)
    mm.touch("a")
    clock.now += 200
    mm.touch("b")
    assert await mm.check() == []  # a idle 200 s, b 0 s; pinned:big first seen now
    clock.now += 150  # a: 350 s > 300; b: 150 s
    done = await mm.check()
    assert [d["model"] for d in done] == ["a"]
    assert "idle for 350 s" in done[0]["reason"]
    clock.now += 400  # b: 550 s; pinned:big: 750 s < its own 3600 s
    assert [d["model"] for d in await mm.check()] == ["b"]
    assert engine.models == ["pinned:big"]


async def test_busy_models_are_never_unloaded() -> None:
    engine, clock, memory = FakeEngine(["a"]), Clock(), [99.0]
    mm = manager(engine, clock, memory, busy={"a"})
    mm.touch("a")
    clock.now += 10_000
    assert await mm.check() == []
    assert engine.models == ["a"]


async def test_memory_pressure_unloads_least_recently_used_until_below_threshold() -> None:
    engine, clock, memory = FakeEngine(["old", "mid", "new"]), Clock(), [92.0]
    mm = manager(engine, clock, memory)
    for model in ("old", "mid", "new"):
        mm.touch(model)
        clock.now += 1

    async def unload_and_free(model: str) -> None:
        engine.models.remove(model)
        engine.unloaded.append(model)
        memory[0] -= 5.0  # each unload frees some memory: 92 -> 87 -> 82

    mm.unload = unload_and_free
    done = await mm.check()
    assert [d["model"] for d in done] == ["old", "mid"]
    assert all("memory at" in d["reason"] for d in done)
    assert engine.models == ["new"]
    assert [u["model"] for u in mm.snapshot()["recent_unloads"]] == ["old", "mid"]


async def test_memory_pressure_with_everything_busy_unloads_nothing() -> None:
    engine, clock, memory = FakeEngine(["a", "b"]), Clock(), [95.0]
    mm = manager(engine, clock, memory, busy={"a", "b"})
    assert await mm.check() == []
    assert engine.unloaded == []


async def test_names_are_compared_as_the_engine_lists_them() -> None:
    engine, clock, memory = FakeEngine(["all-minilm:latest", "x:latest"]), Clock(), [99.0]
    mm = manager(engine, clock, memory, busy={"all-minilm"})  # requests name it without its tag
    mm.touch("x")
    clock.now += 100
    done = await mm.check()
    assert [d["model"] for d in done] == ["x:latest"], "busy under its short name: never unloaded"
    assert engine.models == ["all-minilm:latest"]


async def test_a_model_used_while_the_pass_runs_is_spared() -> None:
    engine, clock, memory = FakeEngine(["a", "b"]), Clock(), [99.0]
    mm = manager(engine, clock, memory)
    mm.touch("a")
    clock.now += 1
    mm.touch("b")
    clock.now += 1

    async def unload_then_b_is_used(model: str) -> None:
        engine.models.remove(model)
        clock.now += 0.5
        mm.touch("b")  # a request for b started while a was being unloaded

    mm.unload = unload_then_b_is_used
    assert [d["model"] for d in await mm.check()] == ["a"]
    assert engine.models == ["b"]


async def test_beyond_the_limit_of_loaded_models_the_least_recently_used_idle_ones_go() -> None:
    engine, clock, memory = FakeEngine(["a", "b", "c"]), Clock(), [40.0]
    mm = MemoryManager(
        loaded=engine.loaded,
        unload=engine.unload,
        busy=lambda: {"a"},
        idle_timeout=lambda m: 3600.0,
        read_memory=lambda: memory[0],
        clock=clock,
        max_loaded=1,
    )
    mm.touch("c")
    clock.now += 1
    mm.touch("b")
    clock.now += 1
    mm.touch("a")
    clock.now += 1
    done = await mm.check()
    assert engine.unloaded == ["c", "b"]  # oldest first; a is busy and stays
    assert all("more than the limit of 1" in d["reason"] for d in done)


async def test_names_neither_loaded_nor_in_use_are_forgotten() -> None:
    engine, clock, memory = FakeEngine(["a"]), Clock(), [40.0]
    mm = manager(engine, clock, memory, busy={"queued:1b"})
    for name in ("a", "queued:1b", *(f"random-{i}" for i in range(100))):
        mm.touch(name)
    await mm.check()
    assert set(mm.last_used) == {"a:latest", "queued:1b"}
