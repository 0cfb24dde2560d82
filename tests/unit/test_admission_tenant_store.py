"""The tenant store on a temporary data dir (SQLite, no Redis): changes applied to the tenants at once, kept across
instances, the configuration overridden but not rewritten, SIGHUP reloads, and what is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shared_ollama.errors import BackendUnavailable, Conflict, InvalidRequest, NotFound, Unauthorized
from shared_ollama.service.admission.tenant_store import TenantStore
from shared_ollama.service.admission.tenants import Role, Tenants
from shared_ollama.service.observability.audit import AuditLog
from shared_ollama.settings import Settings
from tests.support.processes import free_port
from tests.support.tenants import write

FILE = """\
tenants:
  - {name: ops, role: admin, keys: [key-ops]}
  - {name: web, keys: [key-web], limits: {max_inflight_text: 3}}
"""

Open = Callable[..., Awaitable[TenantStore]]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[Open]:
    """Stores over one data dir (as a restarted service would open it); all closed after the test."""
    opened: list[TenantStore] = []

    async def start(settings: Settings, seen: list[list[str]] | None = None) -> TenantStore:
        tenants = Tenants.from_settings(settings)
        audit = AuditLog(settings.data_dir / "analytics.sqlite3")
        await audit.start()
        store = TenantStore(settings, tenants, audit, on_change=seen.append if seen is not None else None)
        await store.start()
        opened.append(store)
        return store

    yield start
    for store in opened:
        await store.close()


def settings_for(tmp_path: Path, text: str = FILE, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", tenants_file=write(tmp_path, text), **extra)


async def test_changes_apply_at_once_and_are_kept(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    seen: list[list[str]] = []
    store = await open_store(settings, seen)
    tenants = store.tenants
    view = await store.create({"name": "app", "limits": {"max_prompt_tokens": 50}}, actor="ops")
    assert view["source"] == "api" and not view["in_config"]
    assert tenants.get("app").limits.max_prompt_tokens == 50
    assert seen[-1] == ["app", "ops", "web"], "the metrics labels learn the new tenant"

    made = await store.add_key("app", actor="ops")
    before = tenants.authenticate(bearer(made["key"]))
    assert before.name == "app" and before.role is Role.USER

    await store.patch("app", {"role": "admin", "limits": {"max_prompt_tokens": None}}, actor="ops")
    after = tenants.authenticate(bearer(made["key"]))
    assert after.is_admin and after.limits.max_prompt_tokens == settings.max_prompt_tokens
    assert not before.is_admin, "a request in flight keeps the tenant it resolved"

    await store.delete_key("app", made["id"], actor="ops")
    with pytest.raises(Unauthorized):
        tenants.authenticate(bearer(made["key"]))
    again = await store.add_key("app", actor="ops")

    reopened = await open_store(settings)
    assert reopened.tenants.authenticate(bearer(again["key"])).name == "app"
    with pytest.raises(Unauthorized):
        reopened.tenants.authenticate(bearer(made["key"]))
    assert reopened.view("app")["role"] == "admin"

    with sqlite3.connect(settings.data_dir / "tenants.sqlite3") as conn:
        stored = " ".join(str(row) for table in ("tenants", "keys") for row in conn.execute(f"SELECT * FROM {table}"))
    assert again["key"] not in stored and made["key"] not in stored, "only digests are stored"


async def test_the_configuration_is_overridden_never_rewritten(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    before = (tmp_path / "tenants.yaml").read_bytes()
    store = await open_store(settings)
    web = store.view("web")
    assert web["source"] == "config" and web["in_config"] and web["limits"]["max_inflight_text"] == 3
    assert [k["source"] for k in web["keys"]] == ["config"] and "key-web" not in str(web)

    patched = await store.patch("web", {"cache": "exact"}, actor="ops")
    assert patched["source"] == "api" and patched["limits"]["max_inflight_text"] == 3, "the patch merges"
    assert store.tenants.authenticate(bearer("key-web")).cache == "exact"

    await store.delete("web", actor="ops")
    with pytest.raises(Unauthorized):
        store.tenants.authenticate(bearer("key-web"))
    with pytest.raises(NotFound):
        store.view("web")
    await store.create({"name": "web"}, actor="ops")
    with pytest.raises(Unauthorized):
        store.tenants.authenticate(bearer("key-web"))  # its configured key stays revoked
    assert (tmp_path / "tenants.yaml").read_bytes() == before

    reopened = await open_store(settings)
    assert reopened.view("web")["limits"]["max_inflight_text"] is None, "the API's spec wins over the file's"


async def test_refusals_change_nothing(tmp_path: Path, open_store: Open) -> None:
    store = await open_store(settings_for(tmp_path))
    with pytest.raises(Conflict):
        await store.create({"name": "web"}, actor="ops")
    with pytest.raises(InvalidRequest) as bad:
        await store.create({"name": "x", "limits": {"max_inflight_vision": -1}}, actor="ops")
    assert bad.value.param == "limits.max_inflight_vision"
    with pytest.raises(InvalidRequest) as keys:
        await store.patch("web", {"keys": ["k"]}, actor="ops")
    assert keys.value.param == "keys"
    with pytest.raises(NotFound):
        await store.patch("nobody", {}, actor="ops")
    with pytest.raises(NotFound):
        await store.delete_key("web", "nope", actor="ops")
    ops_key = store.view("ops")["keys"][0]["id"]
    with pytest.raises(Conflict):
        await store.delete_key("ops", ops_key, actor="ops")  # the only admin key
    with pytest.raises(Conflict):
        await store.patch("ops", {"role": "user"}, actor="ops")
    assert store.names() == ["ops", "web"]
    assert store.tenants.authenticate(bearer("key-ops")).is_admin
    assert await store.audit.query() == [], "nothing was done, nothing is audited"


async def test_sighup_reload_picks_up_the_file_and_keeps_the_old_on_a_bad_one(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    store = await open_store(settings)
    await store.create({"name": "app"}, actor="ops")
    write(tmp_path, FILE + "  - {name: new, keys: [key-new]}\n")
    assert await store.reload_config()
    assert store.tenants.authenticate(bearer("key-new")).name == "new"
    assert store.names() == ["app", "new", "ops", "web"], "the API's tenants stay"

    for bad in ("tenants: [{name: web, bogus: 1}]\n", "tenants:\n  - {name: a, keys: [k]}\n  - {name: b, keys: [k]}\n"):
        write(tmp_path, bad)
        assert not await store.reload_config()
        assert store.tenants.authenticate(bearer("key-new")).name == "new", "the tenants in force stay"
    entries = await store.audit.query(action="config.reload")
    assert [e["detail"]["ok"] for e in entries] == [False, False, True]
    assert {e["actor"] for e in entries} == {"SIGHUP"}


async def test_a_stored_spec_no_longer_valid_is_ignored(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    store = await open_store(settings)
    await store.patch("web", {"cache": "off"}, actor="ops")
    await store.create({"name": "app"}, actor="ops")
    with sqlite3.connect(settings.data_dir / "tenants.sqlite3") as conn:
        conn.execute("""UPDATE tenants SET spec = '{"name": "web", "retired_field": 1}' WHERE name = 'web'""")
        conn.execute("""UPDATE tenants SET spec = '{"name": "app", "retired_field": 1}' WHERE name = 'app'""")
    reopened = await open_store(settings)
    assert reopened.view("web")["source"] == "config", "the file's spec is used instead"
    assert reopened.names() == ["ops", "web"]


async def test_stores_on_one_data_dir_build_on_each_others_changes(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    first = await open_store(settings)
    second = await open_store(settings)
    await first.create({"name": "a"}, actor="ops")
    await second.create({"name": "b"}, actor="ops")  # made on the latest version, not on its stale copy
    assert second.names() == ["a", "b", "ops", "web"]
    assert await first.reload_config()
    assert first.names() == ["a", "b", "ops", "web"]


async def test_an_unreachable_redis_leaves_the_local_copy_in_force(tmp_path: Path, open_store: Open) -> None:
    settings = settings_for(tmp_path)
    await (await open_store(settings)).create({"name": "app"}, actor="ops")
    shared = await open_store(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    assert shared.shared and shared.names() == ["app", "ops", "web"], "started from this replica's copy"
    await shared.sync()  # requests go on with the copy
    with pytest.raises(BackendUnavailable) as down:
        await shared.create({"name": "x"}, actor="ops")
    assert down.value.status == 503 and down.value.retry_after
    assert shared.names() == ["app", "ops", "web"]
