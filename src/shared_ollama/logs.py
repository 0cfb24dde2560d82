"""Structured JSON logs to stderr and a rotating ``logs/api.log``, each line with its request id."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from contextvars import ContextVar
from pathlib import Path

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("shared_ollama_request_id", default=None)
"""The request being served in this task (set by the request-id middleware; tasks inherit it)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, log_dir: Path | None = None) -> None:
    """JSON lines on stderr, and in ``log_dir/api.log`` (10 MiB x 5 rotation) when a directory is given."""
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(log_dir / "api.log", maxBytes=10 * 2**20, backupCount=5))
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
