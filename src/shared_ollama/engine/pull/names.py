"""Pulled names: where a name given to ``/api/pull`` comes from, and its parts.

- ``hf.co/{owner}/{repo}[:{tag}]`` (or ``huggingface.co/...``): a GGUF repository on Hugging Face; the tag names a
  quantisation (``Q4_K_M``, ``q8_0``...), and none or ``latest`` lets ``hf_files.choose`` pick one.
- ``model[:tag]``, ``namespace/model[:tag]``, ``host/namespace/model[:tag]``: Ollama's registry, with Ollama's
  defaults (host ``registry.ollama.ai``, which is the ``registry_url`` setting; namespace ``library``; tag
  ``latest``). The store keeps the shortest form (``qwen3:0.6b`` for ``library/qwen3:0.6b``), as Ollama lists it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HF_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,79}$")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
"""A model name or a tag, as Ollama allows them."""
_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class HfName:
    host: str
    owner: str
    repo: str
    tag: str

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def quant(self) -> str | None:
        """The quantisation asked for; None lets the repository's files decide."""
        return None if self.tag.lower() == DEFAULT_TAG else self.tag

    @property
    def store_name(self) -> str:
        return f"{self.host}/{self.owner}/{self.repo}:{self.tag}"


@dataclass(frozen=True)
class RegistryName:
    host: str | None
    """None: the configured registry (``registry_url``)."""
    namespace: str
    model: str
    tag: str

    @property
    def store_name(self) -> str:
        if self.host is not None:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        return f"{self.namespace}/{self.model}:{self.tag}"

    @property
    def manifest_path(self) -> str:
        return f"/v2/{self.namespace}/{self.model}/manifests/{self.tag}"

    def blob_path(self, digest: str) -> str:
        return f"/v2/{self.namespace}/{self.model}/blobs/{digest}"

    def base_url(self, registry_url: str, insecure: bool) -> str:
        """Where the name's registry answers: the setting, or ``https://host`` (``http://`` when insecure)."""
        if self.host is None:
            return registry_url.rstrip("/")
        return f"{'http' if insecure else 'https'}://{self.host}"


def _split_tag(name: str) -> tuple[str, str]:
    path, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, DEFAULT_TAG
    return path, tag


def parse_pull_name(name: str) -> HfName | RegistryName:
    """The source and parts of ``name``; ValueError (with the reason) when it is not a name Ollama would pull."""
    text = name.strip()
    if not text:
        raise ValueError("model is required")
    path, tag = _split_tag(text)
    parts = path.split("/")
    if parts[0].lower() in HF_HOSTS:
        if len(parts) != 3 or not all(_HF_PART.match(p) for p in parts[1:]) or not _PART.match(tag):
            raise ValueError(f"invalid Hugging Face model name {name!r}: expected hf.co/{{owner}}/{{repo}}[:{{quant}}]")
        return HfName(parts[0].lower(), parts[1], parts[2], tag)
    if len(parts) > 3 or not _PART.match(tag) or not _PART.match(parts[-1]):
        raise ValueError(f"invalid model name {name!r}: expected [host/][namespace/]model[:tag]")
    host = parts[0] if len(parts) == 3 else None
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    if host is not None and not _HOST.match(host):
        raise ValueError(f"invalid registry host {host!r} in {name!r}")
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"invalid namespace {namespace!r} in {name!r}")
    if host is not None and host.lower() == DEFAULT_HOST:
        host = None
    return RegistryName(host, namespace, parts[-1], tag)
