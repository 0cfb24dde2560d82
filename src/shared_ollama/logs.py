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

_MAX_BYTES = 10 * 2**20
LINGER = 0.05
"""Seconds the writer waits after the first record of a batch for more to arrive: under load one wake-up and
one write per destination serve every record of that time, instead of a thread switch per record."""
REQUEST_ID: ContextVar[str | None] = ContextVar("shared_ollama_request_id", default=None)
"""The request being served in this task (set by the request-id middleware; tasks inherit it)."""


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""
        """``ts`` up to its second, made once per second rather than once per line."""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry: dict[str, object] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
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
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class _QueueHandler(logging.Handler):
    """Puts records on the writer thread's queue, with the request id read here (the context is this task's).
    Nothing is formatted on the caller's thread."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None]) -> None:
        super().__init__()
        self.records = records

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """As ``logging.Handler.handle`` without its lock: the queue is safe to put on from any thread."""
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return the record to use
            record = rv
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "request_id", None):
            record.request_id = REQUEST_ID.get()
        if record.exc_info:  # the traceback objects must not outlive this thread's frame
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.put(record)


class _Writer(threading.Thread):
    """Formats and writes records in batches: one write per destination for everything queued meanwhile.

    Idle, it sleeps until a record comes; then it lingers ``linger`` seconds (cut short by ``stopping``) so the
    records of that time are written together and putting them on the queue wakes nobody."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord | None], log_file: Path | None, linger: float = LINGER
    ) -> None:
        super().__init__(name="shared-ollama-logs", daemon=True)
        self.records = records
        self.linger = linger
        self.stopping = threading.Event()
        """Set to write out what is queued at once (the writer then ends at the ``None`` record)."""
        self.formatter = JsonFormatter()
        self.file = (
            logging.handlers.RotatingFileHandler(log_file, maxBytes=_MAX_BYTES, backupCount=5) if log_file else None
        )

    def run(self) -> None:
        running = True
        while running:
            batch = [self.records.get()]
            if batch[0] is not None:
                self.stopping.wait(self.linger)
            while len(batch) < 65536:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            running = None not in batch
            text = "".join(self.formatter.format(r) + "\n" for r in batch if r is not None)
            if text:
                self._write(text)

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
            if self.file is not None:
                stream = self.file.stream
                if stream.tell() >= _MAX_BYTES:
                    self.file.doRollover()
                    stream = self.file.stream
                stream.write(text)
                stream.flush()
        except (OSError, ValueError):  # a closed stderr or a full disk must not kill the writer
            pass


def configure_logging(level: str, log_dir: Path | None = None) -> Callable[[], None]:
    """JSON lines on stderr, and in ``log_dir/api.log`` (10 MiB x 5 rotation) when a directory is given.

    Records are formatted and written by a thread of their own, in batches, so neither a slow disk nor a full
    stderr pipe stalls the event loop. Returns the function that writes out what is queued and stops the
    thread (also registered to run at exit)."""
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    writer = _Writer(records, log_dir / "api.log" if log_dir is not None else None)
    writer.start()
    stopped = threading.Event()

    def flush() -> None:
        if not stopped.is_set():
            stopped.set()
            records.put(None)
            writer.stopping.set()
            writer.join(timeout=5)

    atexit.register(flush)
    # Nothing written names the caller's source line, thread or process: the logging HOWTO's "Optimization"
    # switches save their look-ups (a stack walk among them) on every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [_QueueHandler(records)]
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
