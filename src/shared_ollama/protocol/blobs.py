"""Blob digests as Ollama's ``/api/blobs/:digest`` and ``/api/create`` ``files`` / ``adapters`` name them.

A digest is ``sha256:<64 hex digits>`` (Ollama also accepts ``sha256-<hex>``, its file name form); it is kept
as ``sha256:<lowercase hex>``. File names in ``files`` and ``adapters`` are relative paths inside the model (as
Go's ``fs.ValidPath`` sees them: no leading ``/``, no ``.`` or ``..`` element, no empty element). Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any

from shared_ollama.errors import InvalidRequest

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")


def parse_digest(text: str, *, param: str = "digest") -> str:
    """``text`` as ``sha256:<lowercase hex>``; InvalidRequest (400) naming ``param`` when it is not a digest."""
    match = _DIGEST.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest(
            f"invalid digest {str(text)[:80]!r} in '{param}': expected sha256:<64 hex digits>", param=param
        )
    return "sha256:" + match.group(1).lower()


def valid_file_name(name: str) -> bool:
    """Whether ``name`` is a relative path inside the model (Go's ``fs.ValidPath``, as Ollama checks it)."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def file_digests(raw: Any, field: str) -> dict[str, str]:
    """The ``files`` or ``adapters`` object of a create body: file name -> digest (both checked)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidRequest(f"'{field}' must be an object of file name -> sha256 digest", param=field)
    found = {}
    for name, digest in raw.items():
        if not valid_file_name(str(name)):
            raise InvalidRequest(
                f"'{field}': file path must be relative and stay inside the model: {name!r}", param=field
            )
        found[str(name)] = parse_digest(digest, param=field)
    return found
