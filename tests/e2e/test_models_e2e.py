"""Model lifecycle end to end: the real gateway and engine, a store of their own, the official ollama client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import orjson
import pytest

from shared_ollama.protocol.modelfile import parse_modelfile
from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

BASE = "smollm2:135m"
HI = [{"role": "user", "content": "Hello"}]
OPTIONS = {"num_predict": 2, "temperature": 0, "seed": 1}


@pytest.fixture(scope="module")
def models_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models-config") / "models.yaml"
    path.write_text(
        """
default_profile: tiny-cpu
profiles:
  - name: tiny-cpu
    description: the offline models
    models:
      - {name: smollm2:135m, role: text, expected_memory_gb: 0.3, preload: false}
      - {name: all-minilm, role: embedding, expected_memory_gb: 0.1, preload: false}
    aliases: {default-text: smollm2:135m, default-embedding: all-minilm, default-vision: null}
model_settings:
  smollm2:135m: {pinned_options: {num_ctx: 2048}}
"""
    )
    return path


@pytest.fixture(scope="module")
def gateway(
    vision_store: Path, models_config: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A gateway on a store of its own (models are created and deleted here), with a 1 s memory check."""
    url, proc = start_gateway(
        vision_store,
        tmp_path_factory.mktemp("gw-models"),
        artifacts_dir / "gateway-models.log",
        env={
            "SHARED_OLLAMA_MODELS_CONFIG": str(models_config),
            "SHARED_OLLAMA_MEMORY_CHECK_INTERVAL": "1",
            "SHARED_OLLAMA_IDLE_UNLOAD_SECONDS": "4",
        },
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=120) as client:
        yield client


def loaded(http: httpx.Client) -> set[str]:
    return {m["name"] for m in http.get("/api/v1/models/ps").json()["models"]}


def test_a_model_created_from_a_modelfile_answers_with_its_system_prompt(http: httpx.Client) -> None:
    modelfile = "\n".join(
        [
            "# a derived model",
            "FROM smollm2:135m",
            'SYSTEM """You are a pirate.',
            'Always say ARRR."""',
            "PARAMETER temperature 0",
        ]
    )
    created = http.post("/api/v1/models/create", json={"name": "pirate:e2e", "modelfile": modelfile})
    assert created.status_code == 200, created.text
    show = http.get("/api/v1/models/pirate:e2e/show").json()
    assert "You are a pirate." in show["system"]
    system = {"role": "system", "content": "You are a pirate.\nAlways say ARRR."}
    base = http.post("/api/v1/chat", json={"model": BASE, "messages": [system, *HI], "options": OPTIONS}).json()
    pirate = http.post("/api/v1/chat", json={"model": "pirate:e2e", "messages": HI, "options": OPTIONS}).json()
    assert pirate["prompt_eval_count"] == base["prompt_eval_count"], "the model's SYSTEM is what the prompt starts with"
    assert pirate["message"]["content"] == base["message"]["content"]
    bad = http.post(
        "/api/v1/models/create", json={"name": "x", "modelfile": "FROM smollm2:135m\nPARAMETER tempreature 1\n"}
    )
    assert bad.status_code == 400
    assert "line 2" in bad.json()["error"]


def test_the_ollama_client_creates_copies_shows_and_deletes(gateway: str, http: httpx.Client) -> None:
    client = ollama.Client(host=gateway)
    client.create(model="brief:e2e", from_=BASE, system="Answer in one word.", stream=False)
    client.copy("brief:e2e", "brief-copy:e2e")
    names = {m.model for m in client.list().models}
    assert {"brief:e2e", "brief-copy:e2e"} <= names
    assert http.post("/api/show", json={"model": "brief-copy:e2e"}).json()["system"] == "Answer in one word."
    client.delete("brief-copy:e2e")
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("brief-copy:e2e")
    assert missing.value.status_code == 404
    chat = http.post("/api/chat", json={"model": "brief-copy:e2e", "messages": HI, "stream": False})
    assert chat.status_code == 404
    assert chat.json()["code"] == "model_not_found"
    still = client.chat(model="brief:e2e", messages=HI, options=OPTIONS)  # the shared blob was kept
    assert still.done


def test_pull_streams_progress_for_an_offline_default_and_explains_otherwise(http: httpx.Client) -> None:
    with http.stream("POST", "/api/v1/models/pull", json={"name": BASE}) as resp:
        assert resp.status_code == 200
        statuses = [orjson.loads(line) for line in resp.iter_lines() if line]
    assert statuses[-1]["status"] == "success"
    assert "no download" in statuses[1]["status"]  # the progress of a local install does not pass for a download
    other = http.post("/api/pull", json={"model": "localhost/library/llama3:8b", "stream": False})
    assert other.status_code == 502, other.text  # nothing answers on localhost:443: a clear upstream error
    assert other.json()["code"] == "backend_error"
    assert other.json()["error"].startswith("cannot reach the registry at https://localhost: ")


def test_pinned_num_ctx_is_applied_and_reported(gateway: str, http: httpx.Client) -> None:
    no_cache = {"X-Shared-Ollama-Cache": "off"}  # the load durations must come from the engine, not a replay
    first = http.post(
        "/api/chat",
        json={"model": BASE, "messages": HI, "stream": False, "options": {**OPTIONS, "num_ctx": 1024}},
        headers=no_cache,
    )
    assert first.status_code == 200
    assert "num_ctx=2048 (asked 1024)" in first.headers["X-Shared-Ollama-Pinned-Options"]
    second = http.post(
        "/api/chat",
        json={"model": BASE, "messages": HI, "stream": False, "options": {**OPTIONS, "num_ctx": 4096}},
        headers=no_cache,
    )
    assert second.json()["load_duration"] == 0, "another project's num_ctx did not reload the model"
    assert http.post("/api/v1/models/smollm2:135m/load").status_code == 200
    third = http.post(
        "/api/chat", json={"model": BASE, "messages": HI, "stream": False, "options": OPTIONS}, headers=no_cache
    )
    assert third.json()["load_duration"] == 0, "loading through the service API uses the pinned options too"
    ps = ollama.Client(host=gateway).ps()  # the official client still parses /api/ps with our load_duration
    assert BASE in {m.model for m in ps.models}
    listed = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
    assert listed[BASE]["load_duration"] > 0, "what the model's current load took, in nanoseconds"
    series = f'shared_ollama_model_load_seconds{{model="{BASE}"}} '  # other tests' models may be loaded too
    gauge = [line for line in http.get("/metrics").text.splitlines() if line.startswith(series)]
    assert len(gauge) == 1, "one series per loaded model"
    assert float(gauge[0].rsplit(" ", 1)[1]) == listed[BASE]["load_duration"] / 1e9
    aliased = http.post("/api/v1/chat", json={"model": "default-text", "messages": HI, "options": OPTIONS})
    assert aliased.json()["model"] == BASE
    blind = http.post("/api/v1/chat", json={"model": "default-vision", "messages": HI})
    assert blind.status_code == 400


def test_the_memory_manager_unloads_an_idle_model(http: httpx.Client) -> None:
    assert http.post("/api/v1/models/smollm2:135m/load").status_code == 200
    assert BASE in loaded(http)
    poll(lambda: BASE not in loaded(http), "the idle model unloaded (4 s idle timeout, 1 s checks)")
    profile = http.get("/api/v1/system/model-profile").json()
    assert profile["profile"]["name"] == "tiny-cpu"
    assert any(u["model"] == BASE and "idle" in u["reason"] for u in profile["memory_manager"]["recent_unloads"])


def test_memory_pressure_unloads_least_recently_used(
    model_store: Path, models_config: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    """A threshold below the machine's current memory use stands in for memory pressure."""
    url, proc = start_gateway(
        model_store,
        tmp_path,
        artifacts_dir / "gateway-pressure.log",
        env={
            "SHARED_OLLAMA_MODELS_CONFIG": str(models_config),
            "SHARED_OLLAMA_MEMORY_CHECK_INTERVAL": "1",
            "SHARED_OLLAMA_MEMORY_HIGH_PERCENT": "0.1",
        },
    )
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            assert http.post("/api/v1/models/all-minilm/load").status_code == 200
            poll(lambda: "all-minilm:latest" not in loaded(http) and "all-minilm" not in loaded(http), "unloaded")
            unloads = http.get("/api/v1/system/model-profile").json()["memory_manager"]["recent_unloads"]
            assert any("memory at" in u["reason"] for u in unloads)
    finally:
        stop(proc)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared_ollama.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_cli_writes_a_modelfile_and_manages_models_through_the_service(gateway: str, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    written = cli(
        "modelfile",
        "new",
        "--from",
        BASE,
        "--system",
        'Be "terse".\nVery.',
        "--param",
        "temperature=0.1",
        "-o",
        str(modelfile),
    )
    assert written.returncode == 0, written.stderr
    parsed = parse_modelfile(modelfile.read_text())
    assert (parsed.from_, parsed.system, parsed.parameters) == (BASE, 'Be "terse".\nVery.', {"temperature": 0.1})
    assert cli("models", "--url", gateway, "create", "terse:cli", "-f", str(modelfile)).returncode == 0
    assert "terse:cli" in cli("models", "--url", gateway, "ls").stdout
    assert '"Be \\"terse\\".\\nVery."' in cli("models", "--url", gateway, "show", "terse:cli").stdout
    pulled = cli("models", "--url", gateway, "pull", BASE)
    assert pulled.returncode == 0 and "success" in pulled.stderr
    assert cli("models", "--url", gateway, "rm", "terse:cli").returncode == 0
    missing = cli("models", "--url", gateway, "show", "terse:cli")
    assert missing.returncode == 1 and "404" in missing.stderr
