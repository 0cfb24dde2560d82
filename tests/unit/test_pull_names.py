"""Pulled names: Hugging Face and Ollama-registry forms, their store names and registry URLs."""

from __future__ import annotations

import pytest

from shared_ollama.engine.pull.names import HfName, RegistryName, parse_pull_name


@pytest.mark.parametrize(
    ("name", "repo_id", "quant", "store"),
    [
        ("hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", "bartowski/Qwen2.5-0.5B-Instruct-GGUF", "Q4_K_M",
         "hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
        ("hf.co/ggml-org/SmolVLM-256M-Instruct-GGUF", "ggml-org/SmolVLM-256M-Instruct-GGUF", None,
         "hf.co/ggml-org/SmolVLM-256M-Instruct-GGUF:latest"),
        ("huggingface.co/o/r:latest", "o/r", None, "huggingface.co/o/r:latest"),
        ("HF.CO/o/r:q8_0", "o/r", "q8_0", "hf.co/o/r:q8_0"),
    ],
)  # fmt: skip
def test_hugging_face_names(name: str, repo_id: str, quant: str | None, store: str) -> None:
    parsed = parse_pull_name(name)
    assert isinstance(parsed, HfName)
    assert (parsed.repo_id, parsed.quant, parsed.store_name) == (repo_id, quant, store)


@pytest.mark.parametrize(
    ("name", "host", "manifest", "store"),
    [
        ("qwen3:0.6b", None, "/v2/library/qwen3/manifests/0.6b", "qwen3:0.6b"),
        ("qwen3", None, "/v2/library/qwen3/manifests/latest", "qwen3:latest"),
        ("library/qwen3:0.6b", None, "/v2/library/qwen3/manifests/0.6b", "qwen3:0.6b"),
        ("someone/model:v1", None, "/v2/someone/model/manifests/v1", "someone/model:v1"),
        ("registry.ollama.ai/library/qwen3:0.6b", None, "/v2/library/qwen3/manifests/0.6b", "qwen3:0.6b"),
        ("models.example.org/team/m:7b", "models.example.org", "/v2/team/m/manifests/7b",
         "models.example.org/team/m:7b"),
    ],
)  # fmt: skip
def test_registry_names(name: str, host: str | None, manifest: str, store: str) -> None:
    parsed = parse_pull_name(name)
    assert isinstance(parsed, RegistryName)
    assert (parsed.host, parsed.manifest_path, parsed.store_name) == (host, manifest, store)
    assert parsed.blob_path("sha256:ab") == manifest.split("/manifests/")[0] + "/blobs/sha256:ab"


def test_the_registry_url_comes_from_the_setting_or_the_host() -> None:
    default = parse_pull_name("qwen3:0.6b")
    hosted = parse_pull_name("models.example.org/team/m:7b")
    assert isinstance(default, RegistryName) and isinstance(hosted, RegistryName)
    assert default.base_url("http://127.0.0.1:9/", insecure=False) == "http://127.0.0.1:9"
    assert hosted.base_url("https://registry.ollama.ai", insecure=False) == "https://models.example.org"
    assert hosted.base_url("https://registry.ollama.ai", insecure=True) == "http://models.example.org"


@pytest.mark.parametrize(
    "name",
    ["", "a/b/c/d", "hf.co/owner", "hf.co/owner/repo/extra", "bad name", "ns!/m", "localhost:5000/ns/m", "m:ta/g"],
)
def test_names_ollama_would_not_pull_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ValueError, match=r"model|invalid"):
        parse_pull_name(name)
