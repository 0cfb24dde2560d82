"""Structured JSON logs to stderr and a rotating ``logs/api.log``, each line with its request id."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
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


class _RequestIdQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread, with the request id read here (the context is this task's)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if not getattr(record, "request_id", None):
            record.request_id = REQUEST_ID.get()
        return super().prepare(record)


def configure_logging(level: str, log_dir: Path | None = None) -> Callable[[], None]:
    """JSON lines on stderr, and in ``log_dir/api.log`` (10 MiB x 5 rotation) when a directory is given.

    Records are written by a thread of their own (a queue in between), so a slow disk or a full stderr pipe
    never stalls the event loop. Returns the function that writes out what is queued and stops the thread
    (also registered to run at exit)."""
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(log_dir / "api.log", maxBytes=10 * 2**20, backupCount=5))
    for handler in handlers:
        handler.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers)
    listener.start()
    stopped = threading.Event()

    def flush() -> None:
        if not stopped.is_set():
            stopped.set()
            listener.stop()

    atexit.register(flush)
    root = logging.getLogger()
    root.handlers[:] = [_RequestIdQueueHandler(records)]
    root.setLevel(level.upper())
    return flush


def flush_on_stop_signals(flush: Callable[[], None]) -> None:
    """uvicorn shuts down gracefully on SIGTERM or SIGINT, then raises the signal again to end the process,
    which would skip exit handlers (and the queued log lines). Ending here instead writes them, with status 0."""

    def on_signal(signum: int, frame: object) -> None:
        flush()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
