"""``shared-ollama models ...`` and ``shared-ollama modelfile new``: model management through a running service.

Talks to the service's API (``--url``, default ``http://127.0.0.1:8000``; ``SHARED_OLLAMA_API_KEY`` is sent
as a bearer key), so it works the same whether the engine is Ollama or the embedded one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from shared_ollama.cli_files import UploadError, file_references, upload_files
from shared_ollama.protocol.modelfile import render_modelfile

JsonDict = dict[str, Any]


class ServiceError(Exception):
    pass


def _request(url: str, method: str, path: str, body: JsonDict | None = None, timeout: float = 600) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    key = os.environ.get("SHARED_OLLAMA_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            detail = exc.reason
        raise ServiceError(f"{exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise ServiceError(f"cannot reach the service at {url}: {exc.reason}") from None


def _json(url: str, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
    with _request(url, method, path, body) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def _lines(url: str, path: str, body: JsonDict) -> Iterator[JsonDict]:
    with _request(url, "POST", path, body) as resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)


def show_pull(lines: Iterable[JsonDict], out: TextIO) -> None:
    """A pull's progress on ``out``: a byte-counting tqdm bar per layer, its status lines in between; an error
    line raises ServiceError."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    try:
        for status in lines:
            if "error" in status:
                raise ServiceError(str(status["error"]))
            digest, total, done = status.get("digest"), status.get("total"), status.get("completed") or 0
            if not (isinstance(digest, str) and isinstance(total, int) and total > 0 and isinstance(done, int)):
                tqdm.write(str(status.get("status", "")), file=out)
                continue
            bar = bars.get(digest)
            if bar is None:
                label = str(status.get("status", ""))[:24]
                bar = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=out)
                bars[digest] = bar
            if done > bar.n:
                bar.update(done - bar.n)
    finally:
        for bar in bars.values():
            bar.close()


def run_models(args: argparse.Namespace) -> int:
    url = args.url
    cmd = args.models_cmd
    try:
        if cmd == "ls":
            for model in _json(url, "GET", "/api/v1/models").get("models", []):
                print(f"{model.get('name')}\t{model.get('size', '')}\t{str(model.get('digest', ''))[:12]}")
        elif cmd == "ps":
            for model in _json(url, "GET", "/api/v1/models/ps").get("models", []):
                print(f"{model.get('name')}\t{model.get('size', '')}\tuntil {model.get('expires_at', '')}")
        elif cmd == "show":
            print(json.dumps(_json(url, "GET", f"/api/v1/models/{args.name}/show"), indent=2))
        elif cmd == "create":
            modelfile = Path(args.file)
            text, files = file_references(modelfile.read_text(encoding="utf-8"), modelfile.parent)
            upload_files(url, files, sys.stderr)  # a bar per file; the create then finds the blobs in place
            _json(url, "POST", "/api/v1/models/create", {"name": args.name, "modelfile": text})
            print(f"created {args.name}")
        elif cmd == "cp":
            _json(url, "POST", f"/api/v1/models/{args.source}/copy", {"destination": args.destination})
            print(f"copied {args.source} -> {args.destination}")
        elif cmd == "rm":
            _json(url, "DELETE", f"/api/v1/models/{args.name}")
            print(f"deleted {args.name}")
        elif cmd in ("load", "unload"):
            _json(url, "POST", f"/api/v1/models/{args.name}/{cmd}")
            print(f"{cmd}ed {args.name}")
        elif cmd == "pull":
            show_pull(_lines(url, "/api/v1/models/pull", {"name": args.name}), sys.stderr)
            print(f"pulled {args.name}")
    except (ServiceError, UploadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_prune(store_dir: Path, dry_run: bool) -> int:
    """``models prune``: list the store's orphan blobs (no manifest uses them) and, unless ``dry_run``, delete them."""
    from shared_ollama.engine.blobs import orphan_blobs
    from shared_ollama.engine.store import ModelStore

    try:
        orphans = orphan_blobs(ModelStore(store_dir))
    except OSError as exc:
        print(f"error: cannot read the store's manifests, nothing pruned: {exc}", file=sys.stderr)
        return 1
    total = 0
    for path in orphans:
        size = path.lstat().st_size
        total += size
        print(f"{'would remove' if dry_run else 'removed'}\t{path.name}\t{size}")
        if not dry_run:
            path.unlink(missing_ok=True)
    verb = "would free" if dry_run else "freed"
    print(f"{len(orphans)} orphan blob(s), {verb} {total} bytes", file=sys.stderr)
    return 0


def run_modelfile_new(args: argparse.Namespace) -> int:
    parameters: dict[str, str] = {}
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --param takes name=value, got {item!r}", file=sys.stderr)
            return 2
        parameters[key.strip()] = value.strip()
    text = render_modelfile(args.from_, system=args.system, parameters=parameters or None)
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_service_commands(models_sub: Any, sub: Any) -> None:
    """Add ``models ls|ps|show|create|cp|rm|pull|load|unload`` and ``modelfile new`` to the CLI."""
    for name, help_text, params in (
        ("ls", "models the engine has", ()),
        ("ps", "models loaded now", ()),
        ("show", "one model's details", ("name",)),
        ("rm", "delete a model", ("name",)),
        ("pull", "pull a model (progress bar)", ("name",)),
        ("load", "load a model now", ("name",)),
        ("unload", "unload a model now", ("name",)),
        ("cp", "copy a model", ("source", "destination")),
    ):
        cmd = models_sub.add_parser(name, help=help_text)
        for param in params:
            cmd.add_argument(param)
    prune = models_sub.add_parser("prune", help="remove blobs no model uses from the local store (no service needed)")
    prune.add_argument("--dry-run", action="store_true", help="only list them")
    create = models_sub.add_parser("create", help="create a model from a Modelfile")
    create.add_argument("name")
    create.add_argument("-f", "--file", default="Modelfile")
    modelfile = sub.add_parser("modelfile", help="Modelfile helpers")
    modelfile_sub = modelfile.add_subparsers(dest="modelfile_cmd", required=True)
    new = modelfile_sub.add_parser("new", help="write a Modelfile")
    new.add_argument("--from", dest="from_", required=True, help="the base model")
    new.add_argument("--system", help="the system prompt")
    new.add_argument("--param", action="append", help="a parameter, name=value (repeatable)")
    new.add_argument("-o", "--output", help="file to write (default: stdout)")
    modelfile.set_defaults(func=lambda settings, args: run_modelfile_new(args))
