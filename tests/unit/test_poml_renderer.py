"""The POML renderer's bounds and availability, with a scripted render in place of Node.js (the real renders,
the sandbox and the time limit: tests/integration/test_poml_renderer.py): the waiting line, one template at a
time per tenant, each render's directory removed (cancelled ones too), 501 when templates are unavailable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from shared_ollama.errors import FeatureNotImplemented, QueueFull, TenantBusy
from shared_ollama.service.poml import renderer as renderer_module
from shared_ollama.service.poml.renderer import RENDER_SECONDS, WAITING_PER_SLOT, PomlRenderer, RendererFiles
from shared_ollama.settings import Settings

FILES = RendererFiles(Path("/nonexistent/node"), Path("/nonexistent/poml"), Path("/nonexistent/guard.cjs"))


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path, "poml_mode": "trusted", "poml_timeout_seconds": 30.0}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class HeldRenders:
    """Stands in for the Node.js process: each render waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0

    async def run(self, work: Path, markup: str) -> object:
        self.running += 1
        try:
            await self.release.wait()
            return {"messages": [{"speaker": "human", "content": markup}]}
        finally:
            self.running -= 1


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` until it holds (bounded: 10 s; a render's directory is made in a worker thread)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PomlRenderer, HeldRenders]:
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(tmp_path))
    renderer = PomlRenderer(settings(tmp_path, poml_concurrency=1), files=FILES)
    await renderer.start()
    fake = HeldRenders()
    monkeypatch.setattr(renderer, "_run", fake.run)
    return renderer, fake


async def test_renders_beyond_the_waiting_bound_are_refused_at_once_with_retry_after(
    held: tuple[PomlRenderer, HeldRenders], tmp_path: Path
) -> None:
    renderer, fake = held
    first = asyncio.create_task(renderer.render("<poml>1</poml>", {}, tenant="first"))
    await until(lambda: fake.running == 1, "the first render runs")
    waiting = [
        asyncio.create_task(renderer.render(f"<poml>{i}</poml>", {}, tenant=f"t{i}")) for i in range(WAITING_PER_SLOT)
    ]
    await until(lambda: renderer.waiting == WAITING_PER_SLOT, "the others wait")
    with pytest.raises(QueueFull) as caught:
        await renderer.render("<poml>one too many</poml>", {}, tenant="late")
    assert caught.value.retry_after == 30.0
    fake.release.set()
    results = await asyncio.gather(first, *waiting)
    assert [r["messages"][0]["content"] for r in results] == ["<poml>1</poml>"] + [  # type: ignore[index]
        f"<poml>{i}</poml>" for i in range(WAITING_PER_SLOT)
    ]
    assert renderer.waiting == 0
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (every render's directory removed)


async def test_a_render_that_cannot_get_a_renderer_in_time_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(tmp_path))
    renderer = PomlRenderer(settings(tmp_path, poml_timeout_seconds=0.05), files=FILES)
    await renderer.start()
    fake = HeldRenders()
    monkeypatch.setattr(renderer, "_run", fake.run)
    first = asyncio.create_task(renderer.render("<poml>1</poml>", {}, tenant="a"))
    await until(lambda: fake.running == 1, "the first render runs")
    with pytest.raises(QueueFull) as caught:
        await renderer.render("<poml>2</poml>", {}, tenant="b")
    assert caught.value.status == 503 and caught.value.retry_after == 0.05
    assert renderer.waiting == 0
    fake.release.set()
    await first


async def test_templates_and_variables_are_written_for_the_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(tmp_path))
    renderer = PomlRenderer(settings(tmp_path), files=FILES)
    await renderer.start()
    seen: dict[str, str] = {}

    async def run(work: Path, markup: str) -> object:
        seen["template"] = (work / "template.poml").read_text()
        seen["context"] = (work / "context.json").read_text()
        return {}

    monkeypatch.setattr(renderer, "_run", run)
    await renderer.render("<poml>é {{name}}</poml>", {"name": "Ada"}, tenant="a")
    assert seen == {"template": "<poml>é {{name}}</poml>", "context": '{"name":"Ada"}'}


async def test_turned_off_templates_are_a_501_naming_poml(tmp_path: Path) -> None:
    renderer = PomlRenderer(settings(tmp_path, poml_mode="off"), files=FILES)
    await renderer.start()
    with pytest.raises(FeatureNotImplemented) as caught:
        await renderer.render("<poml>x</poml>", {}, tenant="a")
    assert (caught.value.status, caught.value.code) == (501, "not_implemented")
    assert caught.value.param == "poml" and "turned off" in caught.value.message


async def test_without_unshare_isolated_mode_refuses_templates_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renderer_module.shutil, "which", lambda name: None)
    renderer = PomlRenderer(settings(tmp_path, poml_mode="isolated"), files=FILES)
    await renderer.start()
    with pytest.raises(FeatureNotImplemented) as caught:
        await renderer.render("<poml>x</poml>", {}, tenant="a")
    assert caught.value.status == 501
    assert caught.value.param == "poml" and "unshare" in caught.value.message


async def test_missing_renderer_files_refuse_templates(tmp_path: Path) -> None:
    renderer = PomlRenderer(settings(tmp_path), files="missing /x/node")
    await renderer.start()
    with pytest.raises(FeatureNotImplemented) as caught:
        await renderer.render("<poml>x</poml>", {}, tenant="a")
    assert "missing /x/node" in caught.value.message


async def test_before_start_templates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FeatureNotImplemented):
        await PomlRenderer(settings(tmp_path), files=FILES).render("<poml>x</poml>", {}, tenant="a")


async def test_a_tenant_waits_for_one_template_at_a_time_and_others_still_get_in(
    held: tuple[PomlRenderer, HeldRenders],
) -> None:
    renderer, fake = held
    first = asyncio.create_task(renderer.render("<poml>a1</poml>", {}, tenant="a"))
    await until(lambda: fake.running == 1, "a's first render runs")
    with pytest.raises(TenantBusy) as caught:
        await renderer.render("<poml>a2</poml>", {}, tenant="a")
    assert (caught.value.status, caught.value.code) == (429, "tenant_busy")
    assert caught.value.retry_after == RENDER_SECONDS
    other = asyncio.create_task(renderer.render("<poml>b1</poml>", {}, tenant="b"))
    await until(lambda: renderer.waiting == 1, "b's render waits for the renderer")
    fake.release.set()
    await asyncio.gather(first, other)
    again = await renderer.render("<poml>a3</poml>", {}, tenant="a")  # a's first is done: a may send another
    assert again == {"messages": [{"speaker": "human", "content": "<poml>a3</poml>"}]}


async def test_a_tenant_whose_template_waits_cannot_queue_another(held: tuple[PomlRenderer, HeldRenders]) -> None:
    renderer, fake = held
    first = asyncio.create_task(renderer.render("<poml>b</poml>", {}, tenant="b"))
    await until(lambda: fake.running == 1, "b's render runs")
    queued = asyncio.create_task(renderer.render("<poml>a1</poml>", {}, tenant="a"))
    await until(lambda: renderer.waiting == 1, "a's render waits")
    with pytest.raises(TenantBusy):
        await renderer.render("<poml>a2</poml>", {}, tenant="a")
    assert renderer.waiting == 1  # the line holds one of a's, not two
    fake.release.set()
    await asyncio.gather(first, queued)


async def test_a_render_cancelled_while_its_directory_is_made_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(tmp_path))
    renderer = PomlRenderer(settings(tmp_path), files=FILES)
    await renderer.start()
    entered, proceed = threading.Event(), threading.Event()
    made: list[str] = []

    def prepare(markup: str, context: dict[str, object]) -> str:
        entered.set()
        proceed.wait(10)
        work = PomlRenderer._prepare(markup, context)
        made.append(work)
        return work

    monkeypatch.setattr(renderer, "_prepare", prepare)
    task = asyncio.create_task(renderer.render("<poml>x</poml>", {}, tenant="a"))
    await until(entered.is_set, "the directory is being made")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proceed.set()  # the worker thread goes on and makes the directory after the cancellation
    await until(lambda: bool(made), "the worker thread made the directory")
    await until(lambda: not any(tmp_path.iterdir()), "the cancelled render's directory is removed")
    assert renderer.waiting == 0
    fake = HeldRenders()
    fake.release.set()
    monkeypatch.setattr(renderer, "_run", fake.run)
    monkeypatch.setattr(renderer, "_prepare", PomlRenderer._prepare)
    assert await renderer.render("<poml>y</poml>", {}, tenant="a")  # the slot and a's place were given back


def test_a_directory_half_written_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(tmp_path))

    def refuse(data: object) -> bytes:
        raise TypeError("not serialisable")

    monkeypatch.setattr(renderer_module.orjson, "dumps", refuse)
    with pytest.raises(TypeError):
        PomlRenderer._prepare("<poml>x</poml>", {})
    assert not any(tmp_path.iterdir())


def test_the_installed_packages_provide_the_renderer() -> None:
    files = renderer_module.locate()
    assert isinstance(files, RendererFiles), files
    assert files.program.name == "cli.js" and files.guard.name == "guard.cjs"
