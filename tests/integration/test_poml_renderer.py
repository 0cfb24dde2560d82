"""The POML renderer with the real ``poml`` package and Node.js: what a template can reach, and its bounds (time,
output, memory, cancellation), each render's process and directory gone afterwards.

A render costs about 1.5 s of CPU, so the sandbox's checks share one template.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shared_ollama.errors import InvalidRequest
from shared_ollama.service.poml import renderer as renderer_module
from shared_ollama.service.poml.renderer import PomlRenderer
from shared_ollama.settings import Settings


def attempt(expression: str) -> str:
    """A template expression reporting whether ``expression`` ran or which error stopped it."""
    return f'{{{{ (() => {{ try {{ {expression}; return "allowed"; }} catch (e) {{ return "denied"; }} }})() }}}}'


CLOSE = "s.on(`connect`, () => s.destroy()); s.on(`error`, () => 0)"
"""Closes the socket ``s`` a template opened, whether it connected or not (so the render ends)."""


def lines(*parts: str) -> str:
    return "<poml><human-msg>" + "\n".join(parts) + "</human-msg></poml>"


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Renders make their directories here (so the test sees them, and no other test's)."""
    where = tmp_path / "renders"
    where.mkdir()
    monkeypatch.setattr(renderer_module.tempfile, "tempdir", str(where))
    return where


async def renderer(tmp_path: Path, **overrides: object) -> PomlRenderer:
    values: dict[str, object] = {"data_dir": tmp_path, "poml_timeout_seconds": 20.0}
    values.update(overrides)
    made = PomlRenderer(Settings(_env_file=None, **values))  # type: ignore[arg-type]
    await made.start()
    return made


def render_processes(work_dir: Path) -> list[psutil.Process]:
    """Processes whose command line names a render directory of this test."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(work_dir) in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port a template may try to connect to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.usefixtures("poml_isolation")
async def test_a_template_renders_with_its_variables(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path)
    markup = "<poml><system-msg>Be terse.</system-msg><human-msg>Say hello to {{ name }}.</human-msg></poml>"
    result = await poml.render(markup, {"name": "Ada"}, tenant="t")
    assert result == {
        "messages": [
            {"speaker": "system", "content": "Be terse."},
            {"speaker": "human", "content": "Say hello to Ada."},
        ]
    }
    assert not any(work_dir.iterdir())  # noqa: ASYNC240 (a test's own directory)


@pytest.mark.usefixtures("poml_isolation")
async def test_a_template_reaches_no_file_process_secret_or_network(
    tmp_path: Path, work_dir: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARED_OLLAMA_API_KEYS", "secret-key")
    port = listener.getsockname()[1]
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    require = "process.mainModule.require"
    markup = lines(
        "env={{ Object.keys(process.env).length }}",
        f"read={attempt(f'{require}(`fs`).readFileSync(`{secret}`)')}",
        f"write={attempt(f'{require}(`fs`).writeFileSync(`{tmp_path}/written`, `x`)')}",
        f"spawn={attempt(f'{require}(`child_process`).execSync(`true`)')}",
        f"signal={attempt('process.kill(process.ppid, 0)')}",
        "fetch={{ typeof fetch }}",
        f"connect={attempt(f'const s = {require}(`net`).connect({port}, `127.0.0.1`); {CLOSE}')}",
    )
    poml = await renderer(tmp_path)
    result = await poml.render(markup, {}, tenant="t")
    content = result["messages"][0]["content"]  # type: ignore[index]
    assert content.split() == [  # POML joins the lines with spaces
        "env=0",
        "read=denied",
        "write=denied",
        "spawn=denied",
        "signal=denied",
        "fetch=undefined",
        "connect=allowed",  # the call is made; the connection never arrives (below)
    ]
    assert not (tmp_path / "written").exists()
    assert not connected(listener), "a template reached the network"


async def test_trusted_mode_lets_templates_reach_the_network(
    tmp_path: Path, work_dir: Path, listener: socket.socket
) -> None:
    """The difference ``poml_mode=trusted`` makes (and the proof that the check above can fail)."""
    port = listener.getsockname()[1]
    connect = f"const s = process.mainModule.require(`net`).connect({port}, `127.0.0.1`); {CLOSE}"
    markup = lines(attempt(connect))
    await (await renderer(tmp_path, poml_mode="trusted")).render(markup, {}, tenant="t")
    assert connected(listener)


@pytest.mark.usefixtures("poml_isolation")
async def test_a_template_that_never_ends_is_stopped_at_the_time_limit(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path, poml_timeout_seconds=3.0)
    with pytest.raises(InvalidRequest) as caught:
        await poml.render(lines("{{ (() => { for (;;) {} })() }}"), {}, tenant="t")
    assert caught.value.param == "poml"
    assert "did not render within 3 s" in caught.value.message
    assert render_processes(work_dir) == []
    assert not any(work_dir.iterdir())  # noqa: ASYNC240 (a test's own directory)


@pytest.mark.usefixtures("poml_isolation")
async def test_a_cancelled_render_stops_its_process(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path)
    task = asyncio.create_task(poml.render(lines("{{ (() => { for (;;) {} })() }}"), {}, tenant="t"))
    for _ in range(600):  # bounded: up to 30 s for Node.js to start
        if render_processes(work_dir):
            break
        await asyncio.sleep(0.05)
    assert render_processes(work_dir), "the render never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert render_processes(work_dir) == []
    assert not any(work_dir.iterdir())  # noqa: ASYNC240 (a test's own directory)


@pytest.mark.usefixtures("poml_isolation")
async def test_output_over_the_body_limit_is_refused(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path, max_body_bytes=4096)
    with pytest.raises(InvalidRequest) as caught:
        await poml.render(lines('{{ "x".repeat(10000) }}'), {}, tenant="t")
    assert "rendered more than 4096 bytes" in caught.value.message


@pytest.mark.usefixtures("poml_isolation")
async def test_a_template_past_the_heap_limit_is_refused(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path)
    with pytest.raises(InvalidRequest) as caught:
        await poml.render(lines("{{ Array.from({ length: 1e8 }, (_, i) => ({ i })).length }}"), {}, tenant="t")
    assert "more than 192 MB of memory" in caught.value.message


@pytest.mark.usefixtures("poml_isolation")
async def test_a_syntax_error_is_the_renderers_message_with_its_place(tmp_path: Path, work_dir: Path) -> None:
    poml = await renderer(tmp_path)
    with pytest.raises(InvalidRequest) as caught:
        await poml.render("<poml>\n<human-msg>Hi\n</poml>", {}, tenant="t")
    assert caught.value.param == "poml"
    assert caught.value.message.startswith("the poml template could not be rendered: ")
    assert "(at line 3" in caught.value.message
