"""The agent store: agents per tenant (another tenant's simply not there), runs as summaries and whole, a session's
conversation, retention of runs (a fake clock), and a restart that keeps everything."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared_ollama.errors import Conflict, InvalidRequest
from shared_ollama.service.agents.store import AgentStore

DAY = 86400.0
DEFINITION = {"model": "smollm2", "system": "Be brief.", "tools": ["calculator"], "max_steps": 8}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def a_run(run_id: str, *, session: str | None = None, created_at: float, output: str = "42", **kw: Any) -> dict:
    return {
        "run_id": run_id,
        "session": session,
        "created_at": created_at,
        "stopped": "done",
        "output": output,
        "steps": [{"type": "tool_call", "name": "calculator", "arguments": {"expression": "6*7"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "model_calls": 2, "tool_calls": 1},
        "messages": [{"role": "user", "content": f"question {run_id}"}, {"role": "assistant", "content": output}],
        **kw,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[AgentStore]:
    agents = AgentStore(tmp_path / "data" / "agents.sqlite3", retention_days=30, clock=clock)
    await agents.start()
    try:
        yield agents
    finally:
        await agents.close()


def run_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM agent_runs").fetchone()[0])


async def test_create_returns_the_stored_agent_and_get_reads_it_back(store: AgentStore, clock: Clock) -> None:
    created = await store.create("alpha", "helper", DEFINITION)
    assert created == {"name": "helper", "tenant": "alpha", **DEFINITION, "created_at": clock.now,
                       "updated_at": clock.now}  # fmt: skip
    assert await store.get("alpha", "helper") == created
    assert await store.get("alpha", "nobody") is None


async def test_a_definition_cannot_overwrite_what_the_store_sets(store: AgentStore, clock: Clock) -> None:
    created = await store.create("alpha", "helper", {**DEFINITION, "name": "other", "tenant": "beta", "created_at": 1})
    assert (created["name"], created["tenant"], created["created_at"]) == ("helper", "alpha", clock.now)


async def test_a_second_agent_with_the_same_name_is_a_conflict_naming_it(store: AgentStore) -> None:
    await store.create("alpha", "helper", DEFINITION)
    with pytest.raises(Conflict, match="'helper'") as info:
        await store.create("alpha", "helper", {"model": "other"})
    assert info.value.status == 409 and info.value.param == "name"
    assert (await store.get("alpha", "helper"))["model"] == "smollm2"  # type: ignore[index]
    await store.create("beta", "helper", {"model": "other"})  # the same name for another tenant is another agent


async def test_another_tenants_agent_is_not_there(store: AgentStore) -> None:
    await store.create("alpha", "helper", DEFINITION)
    assert await store.get("beta", "helper") is None
    assert await store.update("beta", "helper", {"model": "x"}) is None
    assert await store.delete("beta", "helper") is False
    assert await store.list("beta") == []
    assert await store.get("alpha", "helper") is not None


async def test_list_is_by_name_and_the_admins_view_is_every_tenant(store: AgentStore, clock: Clock) -> None:
    for tenant, name in [("beta", "abc"), ("alpha", "mid"), ("beta", "zed"), ("alpha", "abc")]:
        clock.now += 1  # created in another order than their names'
        await store.create(tenant, name, DEFINITION)
    assert [a["name"] for a in await store.list("beta")] == ["abc", "zed"]
    assert [(a["name"], a["tenant"]) for a in await store.list(None)] == [
        ("abc", "alpha"),
        ("abc", "beta"),
        ("mid", "alpha"),
        ("zed", "beta"),
    ]


async def test_update_replaces_the_definition_and_keeps_created_at(store: AgentStore, clock: Clock) -> None:
    created = await store.create("alpha", "helper", DEFINITION)
    clock.now += 60
    updated = await store.update("alpha", "helper", {"model": "qwen", "tools": []})
    assert updated == {"name": "helper", "tenant": "alpha", "model": "qwen", "tools": [],
                       "created_at": created["created_at"], "updated_at": clock.now}  # fmt: skip
    assert await store.get("alpha", "helper") == updated
    assert await store.update("alpha", "nobody", DEFINITION) is None


async def test_runs_are_summaries_newest_first_and_run_is_everything(store: AgentStore, clock: Clock) -> None:
    await store.create("alpha", "helper", DEFINITION)
    long_output = "x" * 500
    for i in range(5):
        assert await store.add_run("alpha", "helper", a_run(f"run_{i}", created_at=clock.now + i, output=long_output))
    runs = await store.runs("alpha", "helper")
    assert [r["run_id"] for r in runs] == ["run_4", "run_3", "run_2", "run_1", "run_0"]
    assert runs[0] == {
        "run_id": "run_4",
        "session": None,
        "created_at": clock.now + 4,
        "stopped": "done",
        "output": "x" * 200,
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "model_calls": 2, "tool_calls": 1},
    }
    assert [r["run_id"] for r in await store.runs("alpha", "helper", limit=2)] == ["run_4", "run_3"]
    assert [r["run_id"] for r in await store.runs("alpha", "helper", before=clock.now + 2)] == ["run_1", "run_0"]
    whole = a_run("run_2", created_at=clock.now + 2, output=long_output)
    assert await store.run("alpha", "helper", "run_2") == whole
    assert await store.run("alpha", "helper", "run_9") is None
    assert await store.run("beta", "helper", "run_2") is None
    assert await store.runs("beta", "helper") == []


async def test_a_run_keeps_extra_keys_and_gets_defaults(store: AgentStore, clock: Clock) -> None:
    await store.create("alpha", "helper", DEFINITION)
    await store.add_run("alpha", "helper", {"run_id": "run_1", "output": "hi", "model": "smollm2"})
    assert await store.run("alpha", "helper", "run_1") == {
        "run_id": "run_1",
        "session": None,
        "created_at": clock.now,
        "stopped": "",
        "output": "hi",
        "steps": [],
        "usage": {},
        "messages": [],
        "model": "smollm2",
    }
    with pytest.raises(ValueError, match="run_id"):
        await store.add_run("alpha", "helper", {"output": "no id"})
    with pytest.raises(Conflict, match="run_1"):
        await store.add_run("alpha", "helper", {"run_id": "run_1"})


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_a_runs_limit_out_of_range_is_an_invalid_request(store: AgentStore, limit: int) -> None:
    with pytest.raises(InvalidRequest) as info:
        await store.runs("alpha", "helper", limit=limit)
    assert info.value.param == "limit" and str(limit) in info.value.message


async def test_a_run_of_an_agent_deleted_meanwhile_is_not_kept(store: AgentStore, clock: Clock) -> None:
    assert await store.add_run("alpha", "ghost", a_run("run_1", created_at=clock.now)) is False
    await store.create("alpha", "ghost", DEFINITION)  # a new agent of that name starts with no runs
    assert await store.runs("alpha", "ghost") == []


async def test_session_messages_are_the_newest_runs_of_that_session(store: AgentStore, clock: Clock) -> None:
    await store.create("alpha", "helper", DEFINITION)
    await store.add_run("alpha", "helper", a_run("run_1", session="s1", created_at=clock.now, output="one"))
    await store.add_run("alpha", "helper", a_run("run_2", session="s2", created_at=clock.now + 1, output="two"))
    await store.add_run("alpha", "helper", a_run("run_3", session="s1", created_at=clock.now + 2, output="three"))
    await store.add_run("alpha", "helper", a_run("run_4", created_at=clock.now + 3, output="no session"))
    assert (
        await store.session_messages("alpha", "helper", "s1")
        == a_run("run_3", created_at=0, output="three")["messages"]
    )
    assert (await store.session_messages("alpha", "helper", "s2"))[-1]["content"] == "two"
    assert await store.session_messages("alpha", "helper", "new") == []
    assert await store.session_messages("beta", "helper", "s1") == []


async def test_delete_removes_the_agent_and_its_runs(store: AgentStore, clock: Clock) -> None:
    await store.create("alpha", "helper", DEFINITION)
    await store.create("alpha", "other", DEFINITION)
    await store.add_run("alpha", "helper", a_run("run_1", created_at=clock.now))
    await store.add_run("alpha", "other", a_run("run_1", created_at=clock.now))
    assert await store.delete("alpha", "helper") is True
    assert await store.get("alpha", "helper") is None
    assert await store.delete("alpha", "helper") is False
    assert run_rows(store.path) == 1  # the other agent's run stays
    await store.create("alpha", "helper", DEFINITION)
    assert await store.runs("alpha", "helper") == []
    assert await store.run("alpha", "helper", "run_1") is None


async def test_runs_past_retention_are_purged_by_a_write_at_most_hourly(store: AgentStore, clock: Clock) -> None:
    await store.create("alpha", "helper", DEFINITION)  # the store started (and purged) at clock.now
    await store.add_run("alpha", "helper", a_run("old", created_at=clock.now - 31 * DAY))
    await store.add_run("alpha", "helper", a_run("aging", created_at=clock.now - 30 * DAY + 2 * 3600))
    assert run_rows(store.path) == 2  # under an hour since the last purge: kept for now
    clock.now += 3599
    await store.add_run("alpha", "helper", a_run("fresh", created_at=clock.now))
    assert run_rows(store.path) == 3
    clock.now += 1
    await store.add_run("alpha", "helper", a_run("later", created_at=clock.now))  # an hour on: this write purges
    assert [r["run_id"] for r in await store.runs("alpha", "helper")] == ["later", "fresh", "aging"]
    clock.now += 3601  # "aging" is now just past the 30 days
    assert await store.purge() == 1
    assert [r["run_id"] for r in await store.runs("alpha", "helper")] == ["later", "fresh"]


async def test_everything_survives_a_restart_and_old_runs_go_at_start(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "agents.sqlite3"
    first = AgentStore(path, clock=clock)
    await first.start()
    await first.create("alpha", "helper", DEFINITION)
    await first.add_run("alpha", "helper", a_run("run_old", created_at=clock.now - 20 * DAY))
    await first.add_run("alpha", "helper", a_run("run_new", session="s", created_at=clock.now))
    await first.close()
    clock.now += 15 * DAY
    second = AgentStore(path, clock=clock)
    await second.start()
    try:
        assert run_rows(path) == 1
        assert (await second.get("alpha", "helper"))["tools"] == ["calculator"]  # type: ignore[index]
        assert [r["run_id"] for r in await second.runs("alpha", "helper")] == ["run_new"]
        assert len(await second.session_messages("alpha", "helper", "s")) == 2
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await second.close()


async def test_a_store_not_started_or_closed_says_so(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agents.sqlite3")
    with pytest.raises(RuntimeError, match="agent store is not started"):
        await store.get("alpha", "helper")
    await store.start()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="agent store is closed"):
        await store.list(None)
    with pytest.raises(ValueError):
        AgentStore(tmp_path / "agents.sqlite3", retention_days=0)
