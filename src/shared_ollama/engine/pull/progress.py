"""Pull progress in Ollama's shape, and how often a growing download reports.

Ollama's lines (``api.ProgressResponse``): ``{"status": "pulling manifest"}``, per layer
``{"status": "pulling <first 12 hex of the digest>", "digest", "total", "completed"}`` (``completed`` left out
while 0), ``{"status": "verifying sha256 digest"}``, ``{"status": "writing manifest"}``,
``{"status": "success"}``; a failure is one ``{"error": "..."}`` line.
"""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]
PULLING_MANIFEST = "pulling manifest"
VERIFYING = "verifying sha256 digest"
WRITING = "writing manifest"
SUCCESS = "success"
_MIN_STEP = 1 << 20
_STEPS = 100


def status(text: str) -> JsonDict:
    return {"status": text}


def short_digest(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def layer(digest: str, total: int, completed: int = 0) -> JsonDict:
    line: JsonDict = {"status": f"pulling {short_digest(digest)}", "digest": digest, "total": total}
    if completed:
        line["completed"] = completed
    return line


def error(message: str) -> JsonDict:
    return {"error": message}


class Reporter:
    """Decides which byte counts of a growing download become progress lines: about every hundredth of the
    layer (at least every MiB), the first count and the last; a count that goes backwards (a restarted
    download) is reported too."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.step = max(_MIN_STEP, total // _STEPS)
        self.reported = -1

    def due(self, completed: int) -> bool:
        if (
            self.reported < 0
            or completed >= self.total
            or completed < self.reported
            or completed - self.reported >= self.step
        ):
            if completed == self.reported:
                return False
            self.reported = completed
            return True
        return False
