"""The ``shared-ollama`` command: serve, engine, chat, health, models, modelfile, tune, tenants, config show.

Commands that talk to a running service accept ``--url``, ``--api-key`` and ``--timeout`` before or after any
subcommand; without ``--url`` they find the service the way it was configured (``cli_http.service_url``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
from collections.abc import Sequence

from shared_ollama.cli_chat import add_chat_command
from shared_ollama.cli_health import add_health_command
from shared_ollama.cli_http import API_KEY_ENV, add_connection, service_from
from shared_ollama.cli_models import add_service_commands
from shared_ollama.cli_tenants import add_tenant_commands
from shared_ollama.cli_tune import add_tune_commands
from shared_ollama.settings import Settings


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from shared_ollama.backends.head_start import start_engine_early
    from shared_ollama.logs import configure_logging, flush_on_stop_signals

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    flush_on_stop_signals(
        configure_logging(settings.log_level, settings.data_dir / "logs" if settings.log_file else None)
    )
    # A request allocates a few hundred short-lived objects; at the default threshold (700) the young
    # generation is collected several times per request under load. Requests free what they allocate, so
    # collecting rarely loses nothing and gives back ~8 % of the gateway's CPU (bench/run.py).
    gc.set_threshold(10_000, 20, 20)
    try:  # bound before anything starts: a port in use stops here, before the engine is started
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        print(
            f"shared-ollama: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    # The engine starts now, its start-up overlapping the app's import below; the supervisor adopts it.
    head_start = start_engine_early(settings)
    try:
        import uvicorn

        from shared_ollama.app import create_app
        from shared_ollama.http_server import server_config

        server = uvicorn.Server(server_config(settings, create_app(settings, head_start)))
        server.run(sockets=[sock])
    finally:
        if head_start is not None:
            head_start.discard()  # never adopted (the app did not start): stopped here
    return 0 if server.started else 1


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog while the service starts, instead of being refused
    except OSError:
        sock.close()
        raise
    return sock


def _cmd_engine(settings: Settings, args: argparse.Namespace) -> int:
    from shared_ollama.engine.server import serve

    serve(settings, host=args.host or settings.engine_host, port=args.port or 11434)
    return 0


def _cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from shared_ollama.engine.defaults import DEFAULTS, install_defaults

    if args.models_cmd == "prune":
        from shared_ollama.cli_models import run_prune

        return run_prune(settings.store_dir, args.dry_run)
    if args.models_cmd not in ("prepare", "list"):
        from shared_ollama.cli_models import run_models

        return run_models(args, service_from(args, settings, os.environ, key_env=API_KEY_ENV, timeout=600.0))
    if args.models_cmd == "prepare":
        from tqdm import tqdm

        with tqdm(DEFAULTS, desc="preparing models", unit="model", file=sys.stderr) as bar:
            for model in bar:
                bar.set_postfix_str(model.name)
                install_defaults(settings, only=[model.name])
        for model in DEFAULTS:
            print(f"in the store: {model.name}")
        return 0
    from shared_ollama.cli_models import store_table

    sys.stdout.write(store_table(settings.store_dir))
    return 0


def _cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(settings.public_dict(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shared-ollama", description="Shared Ollama Service")
    add_connection(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (and the engine it manages)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_cmd_serve)

    engine = sub.add_parser("engine", help="run the embedded engine (Ollama API on llama.cpp)")
    engine.add_argument("--host")
    engine.add_argument("--port", type=int)
    engine.set_defaults(func=_cmd_engine)

    add_chat_command(sub)
    add_health_command(sub)

    models = sub.add_parser("models", help="models: through the running service, or the local store")
    add_connection(models)
    models_sub = models.add_subparsers(dest="models_cmd", required=True)
    models_sub.add_parser("prepare", help="install the offline default models into the store")
    models_sub.add_parser("list", help="list the embedded engine's store (no service needed)")
    add_service_commands(models_sub)
    models.set_defaults(func=_cmd_models)

    add_tune_commands(sub)
    add_tenant_commands(sub)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_cmd", required=True)
    config_sub.add_parser("show", help="print the settings in force")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(Settings(), args))


if __name__ == "__main__":
    sys.exit(main())
