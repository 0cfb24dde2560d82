"""Fine-tuning helpers: ``shared-ollama modelfile new|check`` and ``shared-ollama tune create|try``.

A derived model is a base model plus a system prompt, parameters and example messages (Modelfile ``MESSAGE``
lines, a few-shot start of every conversation). ``modelfile new`` writes the Modelfile, ``modelfile check`` reads
one back (an error names its line), ``tune create`` writes it and creates the model through the running service,
and ``tune try`` asks the new model and its base the same prompts (greedy: temperature 0) and prints the answers
side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from shared_ollama.cli_http import (
    API_KEY_ENV,
    Service,
    ServiceError,
    UsageError,
    add_connection,
    field_object,
    model_path,
    parse_options,
    read_text,
    service_from,
)
from shared_ollama.cli_models import create_model
from shared_ollama.cli_render import side_by_side
from shared_ollama.errors import InvalidRequest
from shared_ollama.protocol.modelfile import LIST_PARAMETERS, ROLES, coerce_parameter, parse_modelfile, render_modelfile
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
MAX_PROMPTS = 1000
"""Prompts ``tune try`` reads from its file at most."""
NUM_PREDICT = 128
"""Tokens per answer in ``tune try`` unless ``--num-predict`` says otherwise."""


def parse_parameters(pairs: list[str] | None) -> JsonDict:
    """``--param name=value`` items, typed and checked as a Modelfile's ``PARAMETER`` lines are; repeated
    ``stop`` values make a list."""
    parameters: JsonDict = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise UsageError(f"--param takes name=value, got {pair!r}")
        try:
            typed = coerce_parameter(name, value.strip())
        except ValueError as exc:
            raise UsageError(f"--param {name}: {exc}") from None
        if name in LIST_PARAMETERS:
            parameters.setdefault(name, []).extend(typed)
        else:
            parameters[name] = typed
    return parameters


def parse_messages(text: str, source: str) -> list[dict[str, str]]:
    """Example messages from a file: a JSON array of ``{"role", "content"}`` objects, or one object per line."""
    stripped = text.strip()
    try:
        if stripped.startswith("["):
            items: list[Any] = json.loads(stripped)
        else:
            items = [json.loads(line) for line in stripped.splitlines() if line.strip()]
    except ValueError as exc:
        raise UsageError(f"{source}: not JSON ({exc})") from None
    return [_message(item, f"{source}: message {i}") for i, item in enumerate(items, 1)]


def _message(item: Any, where: str) -> dict[str, str]:
    if not isinstance(item, dict) or not isinstance(item.get("content"), str):
        raise UsageError(f'{where}: must be an object with "role" and "content" (a string)')
    role = str(item.get("role", "")).lower()
    if role not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(ROLES)}, got {item.get('role')!r}")
    return {"role": role, "content": item["content"]}


def modelfile_text(args: argparse.Namespace) -> str:
    """The Modelfile the ``--from/--system/--param/--message/--messages`` options describe."""
    messages: list[dict[str, str]] = []
    if args.messages:
        path = Path(args.messages)
        messages += parse_messages(read_text(path), str(path))
    messages += [_message({"role": role, "content": text}, "--message") for role, text in args.message or []]
    return render_modelfile(
        args.from_, system=args.system, parameters=parse_parameters(args.param) or None, messages=messages or None
    )


def read_prompts(text: str) -> list[str]:
    """A prompt set: one prompt per line; blank lines and lines starting with ``#`` are skipped."""
    prompts = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError("the prompt file has no prompts (one per line; # starts a comment)")
    if len(prompts) > MAX_PROMPTS:
        raise UsageError(f"the prompt file has {len(prompts)} prompts; at most {MAX_PROMPTS}")
    return prompts


def base_of(service: Service, name: str) -> str:
    """The model ``name`` was derived from, as the service shows it."""
    shown = service.json("GET", f"/api/v1/models/{model_path(name)}/show")
    parent = str(field_object(shown, "details").get("parent_model") or "")
    if not parent:
        raise UsageError(f"the service does not say which model {name} was made from: name it with --base")
    return parent


def answer(service: Service, model: str, prompt: str, options: JsonDict) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "options": options, "stream": False}
    reply = service.json("POST", "/api/v1/chat", body)
    return str(field_object(reply, "message").get("content") or "")


def try_models(
    service: Service, models: tuple[str, str], prompts: list[str], options: JsonDict, err: TextIO
) -> list[tuple[str, str, str]]:
    """Each prompt's answer from both models (all of one model's first: no back-and-forth loading), with a bar."""
    from tqdm import tqdm

    answers: dict[str, list[str]] = {}
    with tqdm(total=2 * len(prompts), desc="asking", unit="answer", file=err) as bar:
        for model in models:
            bar.set_postfix_str(model)
            answers[model] = []
            for prompt in prompts:
                answers[model].append(answer(service, model, prompt, options))
                bar.update()
    return list(zip(prompts, answers[models[0]], answers[models[1]], strict=True))


def _try(args: argparse.Namespace, service: Service, out: TextIO, err: TextIO) -> int:
    extra = parse_options(args.option)
    if "temperature" in extra:
        raise UsageError("tune try compares greedy answers: temperature is always 0 (drop --option temperature)")
    prompts = read_prompts(read_text(Path(args.prompts)))
    base = args.base or base_of(service, args.name)
    options = {"num_predict": args.num_predict, **extra, "temperature": 0}
    rows = try_models(service, (args.name, base), prompts, options, err)
    if args.json:
        listing = [{"prompt": p, "answers": {args.name: a, base: b}} for p, a, b in rows]
        out.write(json.dumps(listing, indent=2) + "\n")
        return 0
    width = args.width or shutil.get_terminal_size((100, 24)).columns
    out.write("\n".join(side_by_side((args.name, base), p, (a, b), width) for p, a, b in rows))
    return 0


def _write(text: str, output: str | None, out: TextIO, err: TextIO) -> None:
    if output and output != "-":
        Path(output).write_text(text, encoding="utf-8")
        err.write(f"wrote {output}\n")
    else:
        out.write(text)


def run_tune(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """``modelfile new|check`` and ``tune create|try``: 0, 1 (the service refused) or 2 (bad input)."""
    command = args.tune_cmd
    try:
        if command == "new":
            _write(modelfile_text(args), args.output, out, err)
        elif command == "check":
            parsed = parse_modelfile(read_text(Path(args.file)))
            out.write(
                f"{args.file}: FROM {parsed.from_}, {len(parsed.parameters)} parameter(s), "
                f"{len(parsed.messages)} message(s){', a system prompt' if parsed.system else ''}\n"
            )
        else:
            service = service_from(args, settings, os.environ, key_env=API_KEY_ENV, timeout=600.0)
            if command == "create":
                text = modelfile_text(args)
                if args.output:
                    _write(text, args.output, out, err)
                create_model(service, args.name, text, Path.cwd(), err)
                out.write(f"created {args.name}\n")
            else:
                return _try(args, service, out, err)
    except (UsageError, InvalidRequest) as exc:
        err.write(f"error: {exc}\n")
        return 2
    except OSError as exc:
        err.write(f"error: {exc.strerror or exc}: {exc.filename or ''}\n")
        return 2
    except ServiceError as exc:
        err.write(f"error: {exc}\n")
        return 1
    return 0


def _modelfile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_", required=True, help="the base model (or a GGUF file)")
    parser.add_argument("--system", help="the system prompt")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="a parameter (repeatable)")
    parser.add_argument(
        "--message",
        action="append",
        nargs=2,
        metavar=("ROLE", "TEXT"),
        help="an example message: system, user or assistant, and its text (repeatable, in order)",
    )
    parser.add_argument("--messages", metavar="FILE", help='example messages: JSON lines of {"role", "content"}')


def add_tune_commands(sub: Any) -> None:
    """Add ``modelfile new|check`` and ``tune create|try`` to the CLI."""
    modelfile = sub.add_parser("modelfile", help="write or check a Modelfile")
    modelfile_sub = modelfile.add_subparsers(dest="tune_cmd", required=True)
    new = modelfile_sub.add_parser("new", help="write a Modelfile")
    _modelfile_options(new)
    new.add_argument("-o", "--output", help="file to write (default: stdout)")
    check = modelfile_sub.add_parser("check", help="read a Modelfile back; an error names its line")
    check.add_argument("file", nargs="?", default="Modelfile")

    tune = sub.add_parser("tune", help="make a model from a base and try it against the base")
    add_connection(tune)
    tune_sub = tune.add_subparsers(dest="tune_cmd", required=True)
    create = tune_sub.add_parser("create", help="write the Modelfile and create the model through the service")
    add_connection(create)
    create.add_argument("name", help="the new model's name")
    _modelfile_options(create)
    create.add_argument("-o", "--output", help="also write the Modelfile here")
    tried = tune_sub.add_parser("try", help="the same prompts to a model and its base, answers side by side")
    add_connection(tried)
    tried.add_argument("name", help="the model to try")
    tried.add_argument("prompts", help="a file of prompts, one per line (# starts a comment)")
    tried.add_argument("--base", help="the model to compare with (default: the one NAME was made from)")
    tried.add_argument(
        "--num-predict", type=int, default=NUM_PREDICT, help=f"tokens per answer (default {NUM_PREDICT})"
    )
    tried.add_argument("--option", action="append", metavar="NAME=VALUE", help="another model option (repeatable)")
    tried.add_argument("--width", type=int, help="characters per line (default: the terminal's)")
    tried.add_argument("--json", action="store_true", help="the answers as JSON")
    for parser in (modelfile, tune):
        parser.set_defaults(func=lambda settings, args: run_tune(args, settings, sys.stdout, sys.stderr))
