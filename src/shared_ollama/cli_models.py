"""``shared-ollama models ...``: model management through a running service, and the local store's listing.

Talks to the service's API (found as ``cli_http`` says; ``SHARED_OLLAMA_API_KEY`` or ``--api-key`` is sent as a
bearer key), so it works the same whether the engine is Ollama or the embedded one. ``ls`` and ``ps`` print
tables (``--json``: the service's answer as is); long steps show progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from shared_ollama.cli_files import file_references, upload_files
from shared_ollama.cli_http import Service, ServiceError, UsageError, add_connection, model_path, read_text
from shared_ollama.cli_render import loaded_table, models_table, while_waiting

JsonDict = dict[str, Any]
__all__ = ["ServiceError", "add_service_commands", "create_model", "run_models", "run_prune", "show_pull"]


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


def create_model(service: Service, name: str, modelfile: str, base: Path, err: TextIO) -> JsonDict:
    """Create ``name`` from Modelfile text through the service: the files it names (relative to ``base``) are
    uploaded first (a bar each), then the create runs with a progress line."""
    text, files = file_references(modelfile, base)
    upload_files(service, files, err)
    body = {"name": name, "modelfile": text}
    return while_waiting(f"creating {name}", lambda: service.json("POST", "/api/v1/models/create", body), err)


def run_models(args: argparse.Namespace, service: Service, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``models ls|ps|show|create|cp|rm|pull|load|unload``: 0, 1 with the service's refusal on ``err``, or 2 when
    an input file cannot be used (missing, not UTF-8)."""
    out, err = out or sys.stdout, err or sys.stderr
    cmd = args.models_cmd
    try:
        if cmd in ("ls", "ps"):
            listing = service.json("GET", "/api/v1/models" if cmd == "ls" else "/api/v1/models/ps")
            if args.json:
                out.write(json.dumps(listing, indent=2) + "\n")
            else:
                render = models_table if cmd == "ls" else loaded_table
                out.write(render(listing.get("models") or [], datetime.now(UTC)))
        elif cmd == "show":
            out.write(json.dumps(service.json("GET", f"/api/v1/models/{model_path(args.name)}/show"), indent=2) + "\n")
        elif cmd == "create":
            modelfile = Path(args.file)
            create_model(service, args.name, read_text(modelfile), modelfile.parent, err)
            out.write(f"created {args.name}\n")
        elif cmd == "cp":
            service.json("POST", f"/api/v1/models/{model_path(args.source)}/copy", {"destination": args.destination})
            out.write(f"copied {args.source} -> {args.destination}\n")
        elif cmd == "rm":
            service.json("DELETE", f"/api/v1/models/{model_path(args.name)}")
            out.write(f"deleted {args.name}\n")
        elif cmd in ("load", "unload"):
            path = f"/api/v1/models/{model_path(args.name)}/{cmd}"
            while_waiting(f"{cmd}ing {args.name}", lambda: service.json("POST", path), err)
            out.write(f"{cmd}ed {args.name}\n")
        elif cmd == "pull":
            show_pull(service.lines("/api/v1/models/pull", {"name": args.name}), err)
            out.write(f"pulled {args.name}\n")
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return 2
    except (ServiceError, OSError) as exc:
        err.write(f"error: {exc}\n")
        return 1
    return 0


def store_table(store_dir: Path) -> str:
    """``models list``: the embedded engine's store (no service needed) as a table."""
    from shared_ollama.engine.store import ModelStore

    entries = [
        {"name": e.name, "digest": e.digest, "size": e.size, "modified_at": e.modified_at}
        for e in ModelStore(store_dir).list()
    ]
    return models_table(entries, datetime.now(UTC))


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


def add_service_commands(models_sub: Any) -> None:
    """Add ``models ls|ps|show|create|cp|rm|pull|load|unload`` (through the service) and ``prune`` (local)."""
    for name, help_text, params in (
        ("ls", "models the engine has (a table; --json for scripts)", ()),
        ("ps", "models loaded now (a table; --json for scripts)", ()),
        ("show", "one model's details", ("name",)),
        ("rm", "delete a model", ("name",)),
        ("pull", "pull a model (progress bar)", ("name",)),
        ("load", "load a model now", ("name",)),
        ("unload", "unload a model now", ("name",)),
        ("cp", "copy a model", ("source", "destination")),
    ):
        cmd = models_sub.add_parser(name, help=help_text)
        add_connection(cmd)
        for param in params:
            cmd.add_argument(param)
        if name in ("ls", "ps"):
            cmd.add_argument("--json", action="store_true", help="the service's answer as JSON")
    prune = models_sub.add_parser("prune", help="remove blobs no model uses from the local store (no service needed)")
    prune.add_argument("--dry-run", action="store_true", help="only list them")
    create = models_sub.add_parser("create", help="create a model from a Modelfile")
    add_connection(create)
    create.add_argument("name")
    create.add_argument("-f", "--file", default="Modelfile")
