"""Model names as engines list them: the one normaliser used everywhere a name is compared."""

from __future__ import annotations


def canonical_model(name: str) -> str:
    """``name:tag``: a name without a tag is ``:latest`` (``all-minilm`` is ``all-minilm:latest``). Only the last
    path segment can carry the tag, so a registry host's port (``host:5000/ns/model``) is not mistaken for one."""
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"
