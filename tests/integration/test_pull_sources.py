"""The engine's pulls against the stand-in hub and registry (tests/support/model_hub.py), in process, on small
header-only GGUFs (fast to install): what is downloaded, resumed, shared, verified, refused, and what the store
holds afterwards. The real engine loading and running pulled models is tests/e2e/test_model_pull_e2e.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFWriter

from shared_ollama.engine.handlers import ApiError
from shared_ollama.engine.pull.service import Puller
from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import write_projector
from shared_ollama.settings import Settings
from tests.support.gguf_files import filler_gguf, split_gguf
from tests.support.model_hub import ModelHub, default_config
from tests.support.processes import poll

JsonDict = dict[str, Any]
MIB = 1 << 20
TOKEN = "hf_test_token"
MODEL = "application/vnd.ollama.image.model"
PREFIX = "application/vnd.ollama.image."


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-files")
    small = root / "small.gguf"
    writer = GGUFWriter(str(small), "llama")
    writer.add_context_length(1024)
    for index in range(3):
        writer.add_tensor(f"blk.{index}.weight", np.full((64, 64), index, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "q8": filler_gguf(root / "q8.gguf", "llama", 2),
        "q4": filler_gguf(root / "q4.gguf", "qwen3", 3),
        "big": filler_gguf(root / "big.gguf", "llama", 24),
        "mllama": filler_gguf(root / "mllama.gguf", "mllama", 64),
        "projector": write_projector(root / "mmproj.gguf", 576),
        "small": small,
        **{f"part{i}": p for i, p in enumerate(split_gguf(small, root / "split" / "small-Q4_K_M.gguf", 3), 1)},
    }


@pytest.fixture(scope="module")
def hub(files: dict[str, Path]) -> Iterator[ModelHub]:
    hub = ModelHub()
    hub.add_repo("org/tiny-GGUF", {"tiny-Q8_0.gguf": files["q8"], "tiny-Q4_K_M.gguf": files["q4"],
                                   "mmproj-tiny-f16.gguf": files["projector"], "README.md": b"# tiny\n"})  # fmt: skip
    hub.add_repo("org/big-GGUF", {"big-Q4_K_M.gguf": files["big"]})
    hub.add_repo("org/cut-GGUF", {"cut-Q4_K_M.gguf": files["big"]})
    hub.add_repo("org/split-GGUF", {f"Q4_K_M/small-Q4_K_M-0000{i}-of-00003.gguf": files[f"part{i}"] for i in (1, 2, 3)})
    hub.add_repo("org/corrupt-GGUF", {"c-Q4_K_M.gguf": files["q8"]}, corrupt=("c-Q4_K_M.gguf",))
    hub.add_repo("org/gated-GGUF", {"g-Q4_K_M.gguf": files["q4"]}, token=TOKEN)
    texts = [(PREFIX + "system", b"You are terse."), (PREFIX + "template", b"{{ .Prompt }}"),
             (PREFIX + "params", b'{"temperature": 0.2, "stop": ["<|im_end|>"]}'),
             (PREFIX + "license", b"Apache-2.0")]  # fmt: skip
    hub.add_registry_model("tiny:1m", [(MODEL, files["q8"]), (PREFIX + "projector", files["projector"]), *texts])
    hub.add_registry_model("big:24m", [(MODEL, files["big"])])
    hub.add_registry_model("vision-only:1", [(MODEL, files["q8"])], default_config("mllama"))
    hub.add_registry_model("liar:1", [(MODEL, files["mllama"])], default_config("llama"))
    with hub.running():
        yield hub


def puller_for(hub: ModelHub, root: Path, **overrides: Any) -> Puller:
    values: dict[str, Any] = {"hf_endpoint": hub.url, "registry_url": hub.url, "hf_token": TOKEN}
    settings = Settings(_env_file=None, data_dir=root, models_dir=root / "models", **{**values, **overrides})

    async def unload(name: str) -> None:
        return None

    return Puller(ModelStore(settings.store_dir), settings, unload)


@pytest.fixture
def puller(hub: ModelHub, tmp_path: Path) -> Puller:
    return puller_for(hub, tmp_path)


async def pull(puller: Puller, name: str) -> list[JsonDict]:
    async with puller.follow(name) as (_, lines):
        return [line async for line in lines]


async def until(lines: AsyncIterator[JsonDict], done: Any) -> list[JsonDict]:
    seen = []
    async for line in lines:
        seen.append(line)
        if done(line):
            return seen
    raise AssertionError(f"the pull ended first: {seen}")


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_hugging_face_pull_takes_the_default_quant_and_the_projector(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    lines = await pull(puller, "hf.co/org/tiny-GGUF")
    statuses = [line.get("status") for line in lines]
    assert statuses[:2] == ["pulling manifest", "using tiny-Q4_K_M.gguf (Q4_K_M, the default); projector "
                                                "mmproj-tiny-f16.gguf"]  # fmt: skip
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    model, projector = sha(files["q4"]), sha(files["projector"])
    layers = [line for line in lines if "digest" in line]
    assert [line["digest"] for line in layers] == [model, model, projector, projector]
    assert layers[0] == {"status": f"pulling {model[7:19]}", "digest": model, "total": files["q4"].stat().st_size}
    assert layers[1]["completed"] == layers[1]["total"]
    entry = puller.store.get("hf.co/org/tiny-GGUF:latest")
    assert entry is not None
    assert (entry.digest, entry.projector, entry.family) == (model, projector, "qwen3")
    assert entry.capabilities == ["completion", "vision"]
    assert puller.store.blob_path(model).read_bytes() == files["q4"].read_bytes()
    assert not any((puller.store.root / "partial").iterdir())
    listing = [r for r in hub.requests if r.path == "/api/models/org/tiny-GGUF"]
    assert listing and listing[-1].authorization == f"Bearer {TOKEN}"


async def test_a_tag_picks_its_quant_and_a_missing_one_is_a_404_listing_the_others(puller: Puller) -> None:
    await pull(puller, "hf.co/org/tiny-GGUF:q8_0")
    entry = puller.store.get("hf.co/org/tiny-GGUF:q8_0")
    assert entry is not None and entry.family == "llama"
    lines = await pull(puller, "hf.co/org/tiny-GGUF:Q2_K")
    assert lines[-1] == {"error": "quantization 'Q2_K' not found in 'org/tiny-GGUF' (it has: Q4_K_M, Q8_0)"}
    missing = await pull(puller, "hf.co/org/no-such-repo")
    assert "pull model manifest: file does not exist: 'org/no-such-repo'" in missing[-1]["error"]


async def test_a_split_gguf_is_installed_part_by_part_and_named_as_llama_cpp_finds_it(
    puller: Puller, files: dict[str, Path]
) -> None:
    lines = await pull(puller, "hf.co/org/split-GGUF:Q4_K_M")
    assert lines[-1] == {"status": "success"}
    assert "a split GGUF in 3 parts" in lines[1]["status"]
    entry = puller.store.get("hf.co/org/split-GGUF:Q4_K_M")
    assert entry is not None
    assert [entry.digest, *entry.splits] == [sha(files[f"part{i}"]) for i in (1, 2, 3)]
    assert entry.model_info["general.parameter_count"] == 3 * 64 * 64  # all the parts' tensors
    first = puller.store.model_path(entry)
    assert first.name.endswith("-00001-of-00003.gguf")
    for index in (1, 2, 3):
        part = first.with_name(first.name.replace("-00001-", f"-0000{index}-"))
        assert part.read_bytes() == files[f"part{index}"].read_bytes()
    puller.store.remove(entry.name)
    assert list(puller.store.blobs.iterdir()) == []  # parts and their names go with the model


async def test_a_registry_pull_maps_the_layers_and_keeps_the_ggufs_template(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    lines = await pull(puller, "tiny:1m")
    assert lines[0] == {"status": "pulling manifest"}
    assert {"status": "keeping the GGUF's own chat template: the registry's template is a Go template, which "
                      "llama.cpp cannot run"} in lines  # fmt: skip
    assert lines[-1] == {"status": "success"}
    entry = puller.store.get("tiny:1m")
    assert entry is not None
    assert (entry.system, entry.license, entry.template) == ("You are terse.", ["Apache-2.0"], None)
    assert entry.parameters == {"temperature": 0.2, "stop": ["<|im_end|>"]}
    assert entry.projector == sha(files["projector"]) and "vision" in entry.capabilities
    fetched = len(hub.fetches(f"library/tiny/{sha(files['q8'])}"))
    again = await pull(puller, "library/tiny:1m")  # the same model: every layer is there already
    assert again[-1] == {"status": "success"}
    assert len(hub.fetches(f"library/tiny/{sha(files['q8'])}")) == fetched


async def test_a_family_llama_cpp_cannot_load_is_refused_before_any_weight_is_fetched(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    lines = await pull(puller, "vision-only:1")
    assert "cannot run 'vision-only:1': architecture 'mllama' is not one llama.cpp can load" in lines[-1]["error"]
    assert hub.fetches(f"library/vision-only/{sha(files['q8'])}") == []
    assert puller.store.get("vision-only:1") is None


async def test_a_model_file_llama_cpp_cannot_load_is_refused_after_its_header(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    lines = await pull(puller, "liar:1")
    assert "cannot run 'liar:1': architecture 'mllama'" in lines[-1]["error"]
    [fetch] = hub.fetches(f"library/liar/{sha(files['mllama'])}")
    assert fetch.outcome == "gone" and fetch.sent < files["mllama"].stat().st_size // 2
    assert puller.store.get("liar:1") is None
    assert list((puller.store.root / "partial").iterdir()) == []  # nothing kept to resume


async def test_a_corrupted_download_is_deleted_and_reported_never_installed(puller: Puller) -> None:
    lines = await pull(puller, "hf.co/org/corrupt-GGUF")
    assert lines[-2] == {"status": "verifying sha256 digest"}
    assert lines[-1]["error"].startswith("digest mismatch for c-Q4_K_M.gguf: expected sha256 ")
    assert "the corrupted download was deleted" in lines[-1]["error"]
    assert puller.store.get("hf.co/org/corrupt-GGUF") is None
    assert list((puller.store.root / "partial").iterdir()) == []
    assert not puller.store.blobs.exists() or list(puller.store.blobs.iterdir()) == []


async def test_a_pull_that_would_fill_the_disk_is_refused_before_writing_anything(
    hub: ModelHub, tmp_path: Path
) -> None:
    full = puller_for(hub, tmp_path, min_free_disk_bytes=1 << 60)
    before = len(hub.fetches("org/big-GGUF/big-Q4_K_M.gguf"))
    lines = await pull(full, "hf.co/org/big-GGUF")
    assert lines[-1]["error"].startswith("not enough disk space for this pull: it needs ")
    assert "nothing was downloaded" in lines[-1]["error"]
    assert len(hub.fetches("org/big-GGUF/big-Q4_K_M.gguf")) == before
    assert not (tmp_path / "models").exists()
    with pytest.raises(ApiError) as refused:
        await full._whole(full.follow("hf.co/org/big-GGUF"))
    assert refused.value.status == 507


async def test_a_gated_repository_needs_the_token(hub: ModelHub, tmp_path: Path) -> None:
    anonymous = puller_for(hub, tmp_path, hf_token=None)
    lines = await pull(anonymous, "hf.co/org/gated-GGUF")
    assert "'org/gated-GGUF' on " in lines[-1]["error"] and "is gated" in lines[-1]["error"]
    assert "SHARED_OLLAMA_HF_TOKEN" in lines[-1]["error"]
    with_token = puller_for(hub, tmp_path / "t")
    assert (await pull(with_token, "hf.co/org/gated-GGUF"))[-1] == {"status": "success"}


async def test_a_hugging_face_download_whose_clients_left_resumes_at_the_next_pull(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    key = "org/big-GGUF/big-Q4_K_M.gguf"
    size = files["big"].stat().st_size
    release = hub.stall(key, 10 * MIB)  # huggingface_hub writes in 10 MiB chunks
    async with puller.follow("hf.co/org/big-GGUF") as (job, lines):
        await until(lines, lambda line: line.get("completed") == 10 * MIB)
    assert job.stopped.is_set()
    release.set()  # the download thread gets its next chunk and stops there
    assert job.task is not None
    await asyncio.wait([job.task], timeout=60)
    partial = puller.store.root / "partial" / f"{sha(files['big'])[7:]}.partial"
    assert partial.stat().st_size == 10 * MIB
    assert (await pull(puller, "hf.co/org/big-GGUF"))[-1] == {"status": "success"}
    assert hub.fetches(key)[-1].range_start == 10 * MIB
    entry = puller.store.get("hf.co/org/big-GGUF")
    assert entry is not None and puller.store.blob_path(entry.digest).stat().st_size == size
    assert not partial.exists()


async def test_a_registry_download_whose_clients_left_resumes_at_the_next_pull(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    key = f"library/big/{sha(files['big'])}"
    release = hub.stall(key, 12 * MIB)
    async with puller.follow("big:24m") as (job, lines):
        await until(lines, lambda line: line.get("completed", 0) >= 8 * MIB)
    assert job.task is not None
    await asyncio.wait([job.task], timeout=60)
    await asyncio.to_thread(poll, lambda: hub.fetches(key)[-1].outcome == "gone", "the hub sees the client gone")
    release.set()
    assert (await pull(puller, "big:24m"))[-1] == {"status": "success"}
    resumed = hub.fetches(key)[-1]
    assert resumed.range_start is not None and resumed.range_start >= 8 * MIB
    assert resumed.sent == files["big"].stat().st_size - resumed.range_start


async def test_a_connection_cut_midway_is_resumed_by_huggingface_hub(
    puller: Puller, hub: ModelHub, files: dict[str, Path]
) -> None:
    key = "org/cut-GGUF/cut-Q4_K_M.gguf"
    hub.cut_once(key, 10 * MIB)
    assert (await pull(puller, "hf.co/org/cut-GGUF"))[-1] == {"status": "success"}
    first, second = hub.fetches(key)
    assert (first.outcome, first.sent) == ("cut", 10 * MIB)
    assert second.range_start == 10 * MIB and second.outcome == "complete"
    entry = puller.store.get("hf.co/org/cut-GGUF")
    assert entry is not None and entry.digest == sha(files["big"])


async def test_two_pulls_of_one_model_share_one_download(puller: Puller, hub: ModelHub, files: dict[str, Path]) -> None:
    key = "org/big-GGUF/big-Q4_K_M.gguf"
    before = len(hub.fetches(key))
    release = hub.stall(key, 10 * MIB)
    async with puller.follow("hf.co/org/big-GGUF") as (first_job, first):
        await until(first, lambda line: line.get("completed") == 10 * MIB)
        async with puller.follow("hf.co/org/big-GGUF:latest") as (second_job, second):
            assert second_job is first_job
            seen = await until(second, lambda line: line.get("completed") == 10 * MIB)
            assert seen[0] == {"status": "pulling manifest"}  # a late client sees the pull from its start
            release.set()
            assert [line async for line in first][-1] == {"status": "success"}
            assert [line async for line in second][-1] == {"status": "success"}
    assert len(hub.fetches(key)) == before + 1
