"""Pulling real models through the gateway into the real embedded engine, from a stand-in Hugging Face hub and a
stand-in Ollama registry on loopback (tests/support/model_hub.py), with the official ``ollama`` client.

The hub and the registry serve SmolLM2 (from the session's model store) under made-up names: as copies that
differ from it after its tensor data (so the store does not have them and each pull really downloads), split
into parts, and paired with the tiny vision projector (engine/tiny_vision.py). What the engine pulls, it runs.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import orjson
import pytest
from PIL import Image

from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import IMAGE_TOKENS, write_projector
from tests.e2e.conftest import start_gateway
from tests.support.gguf_files import split_gguf, variant
from tests.support.model_hub import ModelHub, default_config
from tests.support.processes import poll, stop

pytestmark = pytest.mark.e2e

MIB = 1 << 20
TOKEN = "hf_e2e_token"
MODEL, PREFIX = "application/vnd.ollama.image.model", "application/vnd.ollama.image."
HF = "hf.co/test-org/SmolLM2-135M-Instruct-GGUF"
OPTIONS = {"num_predict": 4, "temperature": 0, "seed": 1}
NO_CACHE = {"X-Shared-Ollama-Cache": "off"}


@pytest.fixture(scope="module")
def smollm2(model_store: Path) -> Path:
    store = ModelStore(model_store)
    entry = store.get("smollm2:135m")
    assert entry is not None, f"smollm2:135m is missing from {model_store}"
    return store.blob_path(entry.digest).resolve()


@pytest.fixture(scope="module")
def hub(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelHub]:
    root = tmp_path_factory.mktemp("pull-files")

    def copy(tag: str) -> Path:
        return variant(smollm2, root / f"{tag}.gguf", tag)

    hub = ModelHub()
    quants = {"SmolLM2-135M-Instruct-Q4_1.gguf": copy("hf"), "SmolLM2-135M-Instruct-Q8_0.gguf": copy("q8")}
    hub.add_repo(HF.removeprefix("hf.co/"), {**quants, "README.md": b"# SmolLM2, served by the tests\n"})
    projector = write_projector(root / "mmproj.gguf")
    vision = {"TinyVision-Q4_1.gguf": copy("vision"), "mmproj-TinyVision-F32.gguf": projector}
    hub.add_repo("test-org/TinyVision-GGUF", vision)
    parts = split_gguf(smollm2, root / "split" / "SmolLM2-Q4_1.gguf", 3)
    hub.add_repo("test-org/SmolLM2-split-GGUF", {p.name: p for p in parts})
    hub.add_repo("test-org/SmolLM2-cut-GGUF", {"SmolLM2-Q4_1.gguf": copy("cut")})
    hub.add_repo("test-org/SmolLM2-shared-GGUF", {"SmolLM2-Q4_1.gguf": copy("shared")})
    hub.add_repo(
        "test-org/SmolLM2-corrupt-GGUF", {"SmolLM2-Q4_1.gguf": copy("corrupt")}, corrupt=("SmolLM2-Q4_1.gguf",)
    )
    hub.add_repo("test-org/SmolLM2-gated-GGUF", {"SmolLM2-Q4_1.gguf": copy("gated")}, token=TOKEN)
    texts = [(PREFIX + "system", b"You answer in one word."),
             (PREFIX + "template", b"{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"),
             (PREFIX + "params", b'{"temperature": 0.3, "stop": ["<|im_end|>"]}'),
             (PREFIX + "license", b"Apache-2.0 (served by the tests)")]  # fmt: skip
    hub.add_registry_model("smollm2-test:135m", [(MODEL, copy("registry")), *texts])
    hub.add_registry_model("smollm2-resume:135m", [(MODEL, copy("resume"))])
    hub.add_registry_model("vision-only:1b", [(MODEL, copy("mllama"))], default_config("mllama"))
    with hub.running():
        yield hub


@pytest.fixture(scope="module")
def pull_store(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of its own holding only SmolLM2 (linked), the gateway's default model."""
    source = ModelStore(model_store)
    text = source.get("smollm2:135m")
    assert text is not None
    store = ModelStore(tmp_path_factory.mktemp("pull-store"))
    store.blobs.mkdir(parents=True)
    store.blob_path(text.digest).symlink_to(source.blob_path(text.digest).resolve())
    store.put(text)
    return store.root


def _env(hub: ModelHub, **more: str) -> dict[str, str]:
    return {"SHARED_OLLAMA_HF_ENDPOINT": hub.url, "SHARED_OLLAMA_REGISTRY_URL": hub.url, **more}


@pytest.fixture(scope="module")
def gateway(
    hub: ModelHub, pull_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = _env(hub, SHARED_OLLAMA_HF_TOKEN=TOKEN)
    url, proc = start_gateway(pull_store, tmp_path_factory.mktemp("gw-pull"), artifacts_dir / "pull-e2e.log", env)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture
def client(gateway: str) -> ollama.Client:
    return ollama.Client(host=gateway, timeout=300, headers=NO_CACHE)


def _chat(client: ollama.Client, model: str, images: list[bytes] | None = None) -> ollama.ChatResponse:
    message: dict[str, Any] = {"role": "user", "content": "What is in the picture?"}
    if images:
        message["images"] = images
    return client.chat(model=model, messages=[message], options=OPTIONS)


def _stream(gateway: str, name: str) -> Iterator[dict[str, Any]]:
    """A streamed pull's lines as they come; closing the iterator hangs up."""
    with (
        httpx.Client(base_url=gateway, timeout=300) as http,
        http.stream("POST", "/api/pull", json={"model": name}) as resp,
    ):
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line:
                yield orjson.loads(line)


def test_a_hugging_face_pull_streams_honest_progress_to_the_ollama_client_and_the_model_runs(
    client: ollama.Client,
) -> None:
    progress = list(client.pull(HF, stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[1] == (
        "using SmolLM2-135M-Instruct-Q4_1.gguf (Q4_1: the closest to Q4_K_M, which "
        "'test-org/SmolLM2-135M-Instruct-GGUF' does not have; it has Q4_1, Q8_0)"
    )
    layer = [p for p in progress if p.digest]
    assert {p.status for p in layer} == {f"pulling {layer[0].digest[7:19]}"}
    completed = [p.completed or 0 for p in layer]
    assert completed == sorted(completed) and len(set(completed)) > 3  # grew as the bytes came
    assert completed[-1] == layer[-1].total > 90 * MIB
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    shown = client.show(f"{HF}:latest")
    assert (shown.details.family, shown.details.quantization_level) == ("llama", "Q4_1")
    assert {m.model for m in client.list().models} >= {f"{HF}:latest"}
    answer = _chat(client, HF)
    assert answer.done and answer.message.content


def test_a_registry_pull_without_streaming_maps_the_models_layers(client: ollama.Client) -> None:
    assert client.pull("smollm2-test:135m").status == "success"
    shown = client.show("smollm2-test:135m")
    assert "SYSTEM You answer in one word." in (shown.modelfile or "")
    assert shown.license == "Apache-2.0 (served by the tests)"
    assert "temperature" in (shown.parameters or "") and "<|im_end|>" in (shown.parameters or "")
    base = client.show("smollm2:135m")
    assert shown.template == base.template  # the GGUF's own Jinja template, not the registry's Go one
    assert _chat(client, "smollm2-test:135m").done


def test_a_vision_pull_gets_the_projector_and_the_model_sees_an_image(client: ollama.Client) -> None:
    name = "hf.co/test-org/TinyVision-GGUF"
    assert client.pull(name).status == "success"
    assert "vision" in (client.show(name).capabilities or [])
    image = Image.new("RGB", (64, 64), (220, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    without = _chat(client, name)
    seeing = _chat(client, name, [buffer.getvalue()])
    assert seeing.done
    assert seeing.prompt_eval_count == (without.prompt_eval_count or 0) + IMAGE_TOKENS  # the image reached it


def test_a_split_gguf_is_pulled_part_by_part_and_loaded_from_its_first_part(client: ollama.Client) -> None:
    name = "hf.co/test-org/SmolLM2-split-GGUF"
    progress = list(client.pull(name, stream=True))
    assert "a split GGUF in 3 parts" in progress[1].status
    assert len({p.digest for p in progress if p.digest}) == 3
    assert _chat(client, name).done


def test_a_download_cut_midway_is_resumed(client: ollama.Client, hub: ModelHub) -> None:
    key = "test-org/SmolLM2-cut-GGUF/SmolLM2-Q4_1.gguf"
    hub.cut_once(key, 20 * MIB)
    assert client.pull("hf.co/test-org/SmolLM2-cut-GGUF").status == "success"
    first, second = hub.fetches(key)
    assert (first.outcome, first.sent) == ("cut", 20 * MIB)
    assert (second.range_start, second.outcome) == (20 * MIB, "complete")
    assert _chat(client, "hf.co/test-org/SmolLM2-cut-GGUF").done


def test_a_pull_whose_client_left_is_resumed_by_the_next_one(
    gateway: str, client: ollama.Client, hub: ModelHub, pull_store: Path
) -> None:
    name = "smollm2-resume:135m"
    digest = hub.manifest(name)["layers"][0]["digest"]
    key = f"library/smollm2-resume/{digest}"
    release = hub.stall(key, 20 * MIB)
    lines = _stream(gateway, name)
    assert next(line for line in lines if line.get("completed", 0) >= 16 * MIB)
    lines.close()  # the client leaves mid-download
    poll(lambda: hub.fetches(key)[-1].outcome == "gone", "the engine's download stopping when its client left")
    partial = pull_store / "partial" / f"{digest[7:]}.partial"
    assert partial.stat().st_size >= 16 * MIB
    release.set()
    assert client.pull(name).status == "success"
    resumed = hub.fetches(key)[-1]
    assert resumed.range_start is not None and resumed.range_start >= 16 * MIB
    assert resumed.outcome == "complete" and not partial.exists()
    assert _chat(client, name).done


def test_two_pulls_of_one_model_share_one_download(gateway: str, hub: ModelHub) -> None:
    name = "hf.co/test-org/SmolLM2-shared-GGUF"
    key = "test-org/SmolLM2-shared-GGUF/SmolLM2-Q4_1.gguf"
    release = hub.stall(key, 20 * MIB)
    first, second = _stream(gateway, name), _stream(gateway, name)
    assert next(line for line in first if line.get("completed") == 20 * MIB)
    assert next(line for line in second if line.get("completed") == 20 * MIB)  # the second joined the first
    release.set()
    assert [line for line in first][-1] == {"status": "success"}
    assert [line for line in second][-1] == {"status": "success"}
    assert len(hub.fetches(key)) == 1


def test_a_corrupted_download_is_refused_and_deleted(client: ollama.Client, pull_store: Path) -> None:
    name = "hf.co/test-org/SmolLM2-corrupt-GGUF"
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull(name)
    assert refused.value.status_code == 502
    assert refused.value.error.startswith("digest mismatch for SmolLM2-Q4_1.gguf: expected sha256 ")
    assert f"{name}:latest" not in {m.model for m in client.list().models}
    assert list((pull_store / "partial").glob("*.partial")) == []


def test_a_model_llama_cpp_cannot_run_is_refused_before_its_weights_are_fetched(
    client: ollama.Client, hub: ModelHub
) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        client.pull("vision-only:1b")
    assert refused.value.status_code == 400
    assert "architecture 'mllama' is not one llama.cpp can load" in refused.value.error
    layer = hub.manifest("vision-only:1b")["layers"][0]["digest"]
    assert hub.fetches(f"library/vision-only/{layer}") == []


def test_the_cli_shows_a_progress_bar(gateway: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared_ollama.cli", "models", "--url", gateway, "pull", "smollm2-test:135m"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "100%" in result.stderr and "success" in result.stderr
    assert result.stdout.strip() == "pulled smollm2-test:135m"


def test_a_full_disk_a_gated_repo_and_a_user_key_are_refused_before_anything_is_written(
    hub: ModelHub, pull_store: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    env = _env(hub, SHARED_OLLAMA_MIN_FREE_DISK_BYTES=str(1 << 60),
               SHARED_OLLAMA_API_KEYS="ops:admin-key:admin,app:user-key:user")  # fmt: skip
    store = tmp_path / "store"
    ModelStore(store).put(ModelStore(pull_store).get("smollm2:135m"))  # type: ignore[arg-type]
    (store / "blobs").mkdir()
    for blob in (pull_store / "blobs").iterdir():
        (store / "blobs" / blob.name).symlink_to(blob.resolve())
    url, proc = start_gateway(store, tmp_path / "data", artifacts_dir / "pull-e2e-refusals.log", env)
    try:
        admin = ollama.Client(host=url, headers={"Authorization": "Bearer admin-key"})
        user = ollama.Client(host=url, headers={"Authorization": "Bearer user-key"})
        unpulled = f"{HF}:Q8_0"  # no test pulls it: the store lacks its file
        with pytest.raises(ollama.ResponseError) as forbidden:
            user.pull(unpulled)
        assert forbidden.value.status_code == 403
        key = f"{HF.removeprefix('hf.co/')}/SmolLM2-135M-Instruct-Q8_0.gguf"
        with pytest.raises(ollama.ResponseError) as full:
            admin.pull(unpulled)
        assert full.value.status_code == 507
        assert full.value.error.startswith("not enough disk space for this pull: it needs ")
        with pytest.raises(ollama.ResponseError, match="not enough disk space"):
            list(admin.pull(unpulled, stream=True))  # the error line, streamed
        with pytest.raises(ollama.ResponseError) as gated:
            admin.pull("hf.co/test-org/SmolLM2-gated-GGUF")
        assert "is gated" in gated.value.error and "SHARED_OLLAMA_HF_TOKEN" in gated.value.error
        assert hub.fetches(key) == []
        assert not (store / "partial").exists()
    finally:
        stop(proc)
