"""``shared-ollama models create``'s files: Modelfile paths made absolute, and each file uploaded as a blob (with
a bar) only when the service lacks it — against a loopback stand-in that records what it was sent."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared_ollama.cli_files import UploadError, file_references, upload_files
from shared_ollama.cli_http import Service


def test_file_paths_are_made_absolute_against_the_modelfile_and_models_are_left_alone(tmp_path: Path) -> None:
    text = "FROM ./model.gguf\nADAPTER lora.gguf\nSYSTEM be brief\n"
    rewritten, files = file_references(text, tmp_path)
    assert files == [(tmp_path / "model.gguf").resolve(), (tmp_path / "lora.gguf").resolve()]
    assert rewritten.splitlines() == [f"FROM {files[0]}", f"ADAPTER {files[1]}", "SYSTEM be brief"]
    same, none = file_references("FROM smollm2:135m\nPARAMETER temperature 0\n", tmp_path)
    assert none == [] and same == "FROM smollm2:135m\nPARAMETER temperature 0\n"


class Blobs(BaseHTTPRequestHandler):
    known: set[str]
    received: dict[str, bytes]

    def do_HEAD(self) -> None:
        self.send_response(200 if self.path.rsplit("/", 1)[1] in self.known else 404)
        self.end_headers()

    def do_POST(self) -> None:
        digest = self.path.rsplit("/", 1)[1]
        self.received[digest] = self.rfile.read(int(self.headers["Content-Length"]))
        self.known.add(digest)
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, type[Blobs]]]:
    handler = type("Handler", (Blobs,), {"known": set(), "received": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_each_missing_file_is_uploaded_once_with_a_bar(tmp_path: Path, service: tuple[str, type[Blobs]]) -> None:
    url, handler = service
    model, lora = tmp_path / "model.gguf", tmp_path / "lora.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 9000)
    lora.write_bytes(b"GGUF-lora")
    handler.known.add("sha256:" + hashlib.sha256(lora.read_bytes()).hexdigest())  # the engine has this one
    out = io.StringIO()
    digests = upload_files(Service(url), [model, lora], out)
    assert digests == ["sha256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in (model, lora)]
    assert handler.received == {digests[0]: model.read_bytes()}, "only the missing file was sent, whole"
    assert "uploading model.gguf" in out.getvalue() and "100%" in out.getvalue()
    upload_files(Service(url), [model], io.StringIO())
    assert len(handler.received) == 1, "a file the service has is not sent again"


def test_a_missing_file_or_an_unreachable_service_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="is not a file"):
        upload_files(Service("http://127.0.0.1:9"), [tmp_path / "absent.gguf"], io.StringIO())
    present = tmp_path / "m.gguf"
    present.write_bytes(b"GGUF")
    with pytest.raises(UploadError, match="cannot reach the service"):
        upload_files(Service("http://127.0.0.1:9"), [present], io.StringIO())
