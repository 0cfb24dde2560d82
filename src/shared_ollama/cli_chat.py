"""``shared-ollama chat MODEL [PROMPT]``: try a model, the answer streamed as it is generated.

With a prompt (or text piped on stdin): one answer, then exit. With neither, on a terminal: a conversation
(``/bye`` or Ctrl-D ends it, ``/clear`` forgets it). ``--system`` sets a system prompt, ``--option name=value``
the model's options. Ctrl-C ends the answer being streamed: the connection is closed, so the service stops the
generation and frees its place at once; in a conversation the prompt comes back, in one-shot mode the command
exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import closing, suppress
from typing import Any, TextIO

from shared_ollama.cli_http import (
    API_KEY_ENV,
    Service,
    ServiceError,
    UsageError,
    add_connection,
    parse_options,
    service_from,
)
from shared_ollama.settings import Settings

JsonDict = dict[str, Any]
CHAT = "/api/v1/chat"
MAX_TURNS = 10_000
"""A conversation ends after this many prompts (a bound, not a limit anyone meets)."""
MAX_STDIN = 2 << 20
"""Bytes of piped text read as the prompt: more than the service's body limit takes."""
INTERRUPTED = 130
HELP = "/bye or Ctrl-D ends, /clear forgets the conversation, Ctrl-C stops an answer"


def stream_answer(service: Service, body: JsonDict, out: TextIO) -> tuple[str, bool]:
    """Stream one answer of ``/api/v1/chat`` to ``out`` as it comes: (its text, whether Ctrl-C cut it short).
    A refusal, or an error line mid-stream, raises ServiceError."""
    parts: list[str] = []
    lines = service.lines(CHAT, {**body, "stream": True})
    try:
        with closing(lines):  # a generator left early closes the response, and with it the connection
            for chunk in lines:
                message = chunk.get("message")
                text = message.get("content") if isinstance(message, dict) else None
                if isinstance(text, str) and text:
                    parts.append(text)
                    out.write(text)
                    out.flush()
                if chunk.get("done"):
                    break
    except KeyboardInterrupt:
        return "".join(parts), True
    except ServiceError:
        if parts:
            out.write("\n")  # the error goes on a line of its own
        raise
    return "".join(parts), False


def chat_body(model: str, messages: list[JsonDict], options: JsonDict) -> JsonDict:
    body: JsonDict = {"model": model, "messages": messages}
    if options:
        body["options"] = options
    return body


def one_shot(
    service: Service, model: str, prompt: str, system: str | None, options: JsonDict, out: TextIO, err: TextIO
) -> int:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    _, interrupted = stream_answer(service, chat_body(model, messages, options), out)
    out.write("\n")
    if interrupted:
        out.flush()
        err.write("(stopped)\n")
        return INTERRUPTED
    return 0


def conversation(
    service: Service,
    model: str,
    system: str | None,
    options: JsonDict,
    *,
    read: Callable[[str], str],
    out: TextIO,
    err: TextIO,
) -> int:
    """The interactive loop: each prompt with the conversation so far; an error is shown and the turn dropped."""
    start: list[JsonDict] = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    err.write(f"chatting with {model} ({HELP})\n")
    for _ in range(MAX_TURNS):
        try:
            prompt = read(">>> ").strip()
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            err.write(f"({HELP})\n")
            continue
        if prompt in ("/bye", "/exit", "/quit"):
            return 0
        if prompt == "/clear":
            messages = list(start)
            err.write("(conversation cleared)\n")
            continue
        if not prompt:
            continue
        turn = [*messages, {"role": "user", "content": prompt}]
        try:
            answer, interrupted = stream_answer(service, chat_body(model, turn, options), out)
        except ServiceError as exc:
            out.flush()
            err.write(f"error: {exc}\n")
            continue
        out.write("\n")
        if interrupted:
            err.write("(stopped)\n")
        messages = [*turn, {"role": "assistant", "content": answer}]
    return 0


def _line_editing() -> None:
    """Arrow keys and history for ``input()`` where the platform has readline (imported only here)."""
    with suppress(ImportError):
        import readline  # noqa: F401


def run_chat(args: argparse.Namespace, service: Service, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    try:
        options = parse_options(args.option)
        prompt = " ".join(args.prompt).strip()
        if not prompt and not stdin.isatty():
            prompt = stdin.read(MAX_STDIN).strip()
            if not prompt:
                err.write("error: no prompt (give one after the model, pipe one in, or run on a terminal)\n")
                return 2
        if prompt:
            return one_shot(service, args.model, prompt, args.system, options, out, err)
        _line_editing()
        return conversation(service, args.model, args.system, options, read=input, out=out, err=err)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return 2
    except ServiceError as exc:
        out.flush()
        err.write(f"error: {exc}\n")
        return 1


def add_chat_command(sub: Any) -> None:
    chat = sub.add_parser("chat", help="chat with a model through the service: one prompt, or a conversation")
    add_connection(chat)
    chat.add_argument("model", help="the model, e.g. smollm2:135m")
    chat.add_argument("prompt", nargs="*", help="the prompt (none: read stdin, or a conversation on a terminal)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument(
        "--option", action="append", metavar="NAME=VALUE", help="a model option, e.g. temperature=0 (repeatable)"
    )
    chat.set_defaults(func=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    service = service_from(args, settings, os.environ, key_env=API_KEY_ENV, timeout=600.0)
    return run_chat(args, service, sys.stdin, sys.stdout, sys.stderr)
