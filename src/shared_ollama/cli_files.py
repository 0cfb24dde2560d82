"""``shared-ollama models create``'s files: a Modelfile's ``FROM ./x.gguf`` and ``ADAPTER ./lora.gguf`` uploaded as
blobs with a progress bar each, before the create.

The paths are read relative to the Modelfile (as ``ollama create`` does) and sent to the service as absolute ones;
each file is hashed (a bar), looked up (``HEAD /api/blobs/<digest>``) and, when the engine lacks it, streamed
(``POST``, a bar of bytes sent). The create then finds every blob in place and copies nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from shared_ollama.cli_http import Service, ServiceError
from shared_ollama.protocol.modelfile import is_file_reference

CHUNK = 1 << 20


class UploadError(ServiceError):
    """A file that cannot be uploaded (missing, or refused by the service)."""


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


def _exists(service: Service, digest: str) -> bool:
    try:
        with service.open("HEAD", f"/api/blobs/{digest}"):
            return True
    except ServiceError as exc:
        if exc.status == 404:
            return False
        raise UploadError(str(exc)) from None


def _send(service: Service, path: Path, digest: str, out: TextIO) -> None:
    from tqdm import tqdm

    size = path.stat().st_size
    bar = tqdm(total=size, desc=f"uploading {path.name}"[:32], unit="B", unit_scale=True, file=out)

    def body() -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                bar.update(len(chunk))
                yield chunk

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    try:
        with service.open("POST", f"/api/blobs/{digest}", data=body(), headers=headers):
            pass
    except ServiceError as exc:
        raise UploadError(f"uploading {path.name}: {exc}") from None
    finally:
        bar.close()


def upload_files(service: Service, files: list[Path], out: TextIO) -> list[str]:
    """Each file as a blob on the service's engine (uploaded only when missing); their digests."""
    digests = []
    for path in files:
        if not path.is_file():
            raise UploadError(f"{path} is not a file")
        digest = _digest(path, out)
        if not _exists(service, digest):
            _send(service, path, digest, out)
        digests.append(digest)
    return digests
