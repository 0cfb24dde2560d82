"""A fleet of real engines behind one gateway: three embedded engines (``shared-ollama engine``) as ``ollama`` hosts
and llama.cpp's own OpenAI-compatible server as an ``openai`` host. Placement by model and by what is loaded,
checked on each engine's own ``/api/ps``; a host SIGKILLed during a run of 200 requests (none fails; the host is
shown down, then up after its restart); the official ``ollama`` client chatting through the ``openai`` host."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from tests.e2e.conftest import start_gateway
from tests.support.processes import free_port, poll, spawn, stop, wait_http_ok

pytestmark = pytest.mark.e2e

CHAT = "smollm2:135m"
EMBED = "all-minilm:latest"
VIA_OPENAI = "smollm2-openai:latest"
HOST = "X-Shared-Ollama-Engine-Host"
SHORT = {"num_predict": 4, "temperature": 0}
NO_CACHE = {"X-Shared-Ollama-Cache": "off"}  # every request must reach a host, not the response cache


@dataclass
class Engine:
    """One real embedded engine process on a fixed loopback port (so it can be restarted where it was)."""

    store: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["engine", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = spawn(args, env={"SHARED_OLLAMA_MODELS_DIR": str(self.store)}, log_path=self.log)

    def wait(self) -> None:
        wait_http_ok(f"{self.url}/api/version", self.proc)

    def loaded(self) -> set[str]:
        return {m["name"] for m in httpx.get(f"{self.url}/api/ps", timeout=10).json()["models"]}

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class FleetUnderTest:
    url: str
    engines: dict[str, Engine]


@pytest.fixture(scope="module")
def fleet(
    model_store: Path,
    artifacts_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    llama_hosts: tuple[dict[str, str], str],
) -> Iterator[FleetUnderTest]:
    engines = {name: Engine(model_store, artifacts_dir / f"fleet-engine-{name}.log") for name in ("a", "b", "c")}
    for engine in engines.values():
        engine.start()
    addresses, key = llama_hosts
    try:
        for engine in engines.values():
            engine.wait()
        entries: list[dict[str, Any]] = [
            {"name": "a", "url": engines["a"].url, "slots": 2, "models": [CHAT]},
            {"name": "b", "url": engines["b"].url, "slots": 2, "models": [CHAT, EMBED]},
            {"name": "c", "url": engines["c"].url, "slots": 2, "models": [EMBED]},
            {"name": "d", "kind": "openai", "url": addresses[CHAT], "api_key": key, "models": [VIA_OPENAI]},
        ]
        data_dir = tmp_path_factory.mktemp("fleet-gw")
        path = data_dir / "engines.yaml"
        path.write_text(yaml.safe_dump({"engines": entries}))
        env = {
            "SHARED_OLLAMA_ENGINES_FILE": str(path),
            "SHARED_OLLAMA_ENGINE_HEALTH_INTERVAL": "0.5",
            "SHARED_OLLAMA_MAX_INFLIGHT_TEXT": "16",  # the run below keeps 8 requests of one tenant in flight
        }
        url, proc = start_gateway(model_store, data_dir, artifacts_dir / "fleet-gateway.log", env)
        try:
            yield FleetUnderTest(url, engines)
        finally:
            stop(proc)
    finally:
        for engine in engines.values():
            engine.stop()


def _engines(url: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in httpx.get(f"{url}/api/v1/engines", timeout=10).json()["engines"]}


def _chat(model: str = CHAT, **options: Any) -> dict[str, Any]:
    prompt = [{"role": "user", "content": "Name a colour."}]
    return {"model": model, "messages": prompt, "stream": False, "options": {**SHORT, **options}}


def test_requests_go_only_to_hosts_that_serve_their_model(fleet: FleetUnderTest) -> None:
    with httpx.Client(base_url=fleet.url, timeout=120, headers=NO_CACHE) as http:
        embedded = [http.post("/api/embed", json={"model": EMBED, "input": f"text {i}"}) for i in range(4)]
        chats = [http.post("/api/chat", json=_chat()) for _ in range(4)]
    assert all(r.status_code == 200 for r in embedded + chats), [r.text for r in embedded + chats]
    assert {r.headers[HOST] for r in embedded} <= {"b", "c"}
    assert {r.headers[HOST] for r in chats} <= {"a", "b"}
    assert EMBED not in fleet.engines["a"].loaded(), "the engine that does not serve the model never loaded it"
    assert CHAT not in fleet.engines["c"].loaded()
    tags = {m["name"]: m["hosts"] for m in httpx.get(f"{fleet.url}/api/tags", timeout=10).json()["models"]}
    assert tags[CHAT] == ["a", "b"] and tags[EMBED] == ["b", "c"] and tags[VIA_OPENAI] == ["d"]


def test_a_host_with_the_model_loaded_is_preferred(fleet: FleetUnderTest) -> None:
    a, b = fleet.engines["a"], fleet.engines["b"]
    for engine in (a, b):  # unload it everywhere, then load it on b only (b comes after a in the configuration)
        httpx.post(f"{engine.url}/api/generate", json={"model": CHAT, "keep_alive": 0}, timeout=60)
    httpx.post(f"{b.url}/api/generate", json={"model": CHAT, "keep_alive": "5m"}, timeout=60)
    poll(lambda: CHAT in _engines(fleet.url)["b"]["loaded"], "the fleet's probe to see the model loaded on b")
    poll(lambda: CHAT not in _engines(fleet.url)["a"]["loaded"], "the fleet's probe to see it gone from a")
    with httpx.Client(base_url=fleet.url, timeout=120, headers=NO_CACHE) as http:
        hosts = [http.post("/api/chat", json=_chat()).headers[HOST] for _ in range(5)]
    assert hosts == ["b"] * 5
    assert CHAT not in a.loaded(), "nothing loaded the model again on the other host"


def test_a_host_killed_during_200_requests_fails_none_and_comes_back(fleet: FleetUnderTest) -> None:
    a, b = fleet.engines["a"], fleet.engines["b"]
    httpx.post(f"{a.url}/api/generate", json={"model": CHAT, "keep_alive": "5m"}, timeout=60)  # both warm: both used
    poll(lambda: CHAT in _engines(fleet.url)["a"]["loaded"], "the fleet's probe to see the model loaded on a")
    answered: list[int] = []
    hosts: list[str] = []

    async def run() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(200):
            queue.put_nowait(i)
        async with httpx.AsyncClient(base_url=fleet.url, timeout=120, headers=NO_CACHE) as http:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    reply = await http.post("/api/chat", json=_chat(seed=i))
                    answered.append(reply.status_code)
                    hosts.append(reply.headers.get(HOST, ""))
                    if len(answered) == 40:
                        assert b.proc is not None
                        os.kill(b.proc.pid, signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), timeout=300)

    asyncio.run(run())
    assert len(answered) == 200
    assert answered == [200] * 200, {code: answered.count(code) for code in set(answered)}
    assert "b" in hosts[:40] and hosts[-40:].count("b") == 0, "b took requests until it was killed, none after"
    assert _engines(fleet.url)["b"]["state"] != "up"
    assert b.proc is not None
    b.proc.wait(timeout=10)
    b.start()
    b.wait()
    poll(lambda: _engines(fleet.url)["b"]["state"] == "up", "the killed host to be shown up after its restart")
    assert _engines(fleet.url)["b"]["failures"] >= 1


def test_the_ollama_client_chats_through_an_openai_host(fleet: FleetUnderTest) -> None:
    answer = ollama.Client(host=fleet.url, headers=NO_CACHE).chat(
        model=VIA_OPENAI, messages=[{"role": "user", "content": "Say hello."}], options=SHORT
    )
    assert answer.message.content and answer.done
    assert answer.eval_count == 4 and answer.prompt_eval_count
    raw = httpx.post(f"{fleet.url}/api/chat", json=_chat(VIA_OPENAI, repeat_penalty=1.1), timeout=120, headers=NO_CACHE)
    assert raw.status_code == 200 and raw.headers[HOST] == "d"
    assert "options.repeat_penalty" in raw.headers["X-Shared-Ollama-Dropped-Options"]
    streamed = httpx.post(
        f"{fleet.url}/api/chat", json={**_chat(VIA_OPENAI), "stream": True}, timeout=120, headers=NO_CACHE
    )
    lines = [line for line in streamed.text.splitlines() if line]
    assert streamed.status_code == 200 and '"done":true' in lines[-1]


def test_an_openai_host_is_never_asked_what_only_ollama_hosts_answer(fleet: FleetUnderTest) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60, headers=NO_CACHE) as http:
        shown = http.post("/api/show", json={"model": VIA_OPENAI})
        assert shown.status_code == 200 and "capabilities" not in shown.json(), "nothing known, nothing claimed"
        refused = http.post("/api/pull", json={"model": CHAT, "stream": False, "host": "d"})
        assert refused.status_code == 400 and "openai host" in refused.json()["error"], "models live on ollama hosts"
        loaded = http.post("/api/generate", json={"model": VIA_OPENAI, "stream": False})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["done_reason"] == "load" and loaded.json()["response"] == ""


def test_the_openai_client_gets_the_openai_hosts_own_answer(fleet: FleetUnderTest) -> None:
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key="unused", default_headers=NO_CACHE, max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Say hello."}]
    answer = client.chat.completions.with_raw_response.create(
        model=VIA_OPENAI, messages=messages, max_tokens=4, temperature=0
    )
    completion = answer.parse()
    assert answer.headers[HOST] == "d"
    assert completion.model == VIA_OPENAI, "the model as the client named it"
    assert completion.choices[0].message.content and completion.usage and completion.usage.completion_tokens == 4
    assert "timings" in (completion.model_extra or {}), "llama-server's own field came through: not rebuilt here"
    chunks = list(
        client.chat.completions.create(model=VIA_OPENAI, messages=messages, max_tokens=4, temperature=0, stream=True)
    )
    assert chunks and all(c.model == VIA_OPENAI for c in chunks)
    assert {c.system_fingerprint for c in chunks} == {completion.system_fingerprint} != {"fp_shared_ollama"}
    assert chunks[-1].choices[0].finish_reason == "length" and "timings" not in (chunks[-1].model_extra or {})
    assert all(c.choices for c in chunks), "no usage chunk: this client did not ask for one"
    with_usage = list(
        client.chat.completions.create(
            model=VIA_OPENAI,
            messages=messages,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens == 4
    assert "timings" in (with_usage[-1].model_extra or {}), "llama-server sends its timings with the usage"
    ollama_host = client.chat.completions.create(model=CHAT, messages=messages, max_tokens=4, temperature=0)
    assert ollama_host.system_fingerprint == "fp_shared_ollama", "an ollama host's answer is translated as before"
