"""``shared-ollama models create``'s files: a Modelfile's ``FROM ./x.gguf`` and ``ADAPTER ./lora.gguf`` uploaded as
blobs with a progress bar each, before the create.

The paths are read relative to the Modelfile (as ``ollama create`` does) and sent to the service as absolute ones;
each file is hashed (a bar), looked up (``HEAD /api/blobs/<digest>``) and, when the engine lacks it, streamed
(``POST``, a bar of bytes sent). The create then finds every blob in place and copies nothing.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from shared_ollama.protocol.modelfile import is_file_reference

CHUNK = 1 << 20


class UploadError(Exception):
    pass


def file_references(text: str, base: Path) -> tuple[str, list[Path]]:
    """The Modelfile ``text`` with each ``FROM``/``ADAPTER`` file path made absolute (relative ones against
    ``base``, ``~`` expanded), and those files in order."""
    lines: list[str] = []
    files: list[Path] = []
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        value = rest.strip()
        if word.upper() in ("FROM", "ADAPTER") and value and (word.upper() == "ADAPTER" or is_file_reference(value)):
            path = Path(value).expanduser()
            path = path if path.is_absolute() else (base / path)
            path = path.resolve()
            files.append(path)
            line = f"{word.upper()} {path}"
        lines.append(line)
    return "\n".join(lines) + "\n", files


def _headers(extra: dict[str, str]) -> dict[str, str]:
    key = os.environ.get("SHARED_OLLAMA_API_KEY")
    return {**extra, **({"Authorization": f"Bearer {key}"} if key else {})}


def _digest(path: Path, out: TextIO) -> str:
    from tqdm import tqdm

    sha = hashlib.sha256()
    with (
        path.open("rb") as handle,
        tqdm(total=path.stat().st_size, desc=f"hashing {path.name}"[:32], unit="B", unit_scale=True, file=out) as bar,
    ):
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            bar.update(len(chunk))
    return "sha256:" + sha.hexdigest()


def _exists(url: str, digest: str) -> bool:
    req = urllib.request.Request(f"{url.rstrip('/')}/api/blobs/{digest}", method="HEAD", headers=_headers({}))
    try:
        with urllib.request.urlopen(req, timeout=60):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise UploadError(f"{exc.code} looking up the blob of {digest}") from None
    except urllib.error.URLError as exc:
        raise UploadError(f"cannot reach the service at {url}: {exc.reason}") from None


def _send(url: str, path: Path, digest: str, out: TextIO) -> None:
    from tqdm import tqdm

    size = path.stat().st_size
    bar = tqdm(total=size, desc=f"uploading {path.name}"[:32], unit="B", unit_scale=True, file=out)

    def body() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                bar.update(len(chunk))
                yield chunk

    headers = _headers({"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    req = urllib.request.Request(f"{url.rstrip('/')}/api/blobs/{digest}", data=body(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600):
            pass
    except urllib.error.HTTPError as exc:
        raise UploadError(f"{exc.code} uploading {path.name}: {exc.read()[:300]!r}") from None
    except urllib.error.URLError as exc:
        raise UploadError(f"cannot reach the service at {url}: {exc.reason}") from None
    finally:
        bar.close()


def upload_files(url: str, files: list[Path], out: TextIO) -> list[str]:
    """Each file as a blob on the service's engine (uploaded only when missing); their digests."""
    digests = []
    for path in files:
        if not path.is_file():
            raise UploadError(f"{path} is not a file")
        digest = _digest(path, out)
        if not _exists(url, digest):
            _send(url, path, digest, out)
        digests.append(digest)
    return digests
