"""``shared-ollama health --wait``: looks until healthy (bounded by a fake clock), gives up silently when the
server's process is gone, and says why when time runs out."""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, field
from typing import Any

from shared_ollama.cli_health import run_health, wait_ready
from shared_ollama.cli_http import Service, ServiceError

JsonDict = dict[str, Any]
HEALTHY: JsonDict = {"status": "healthy", "ollama_status": "running", "engine": {"loaded_models": ["smollm2:135m"]}}


@dataclass(frozen=True)
class Answers(Service):
    """Health answers in order (the last one repeats); an exception in the list is raised."""

    answers: list[JsonDict | ServiceError] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        self.asked.append(path)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ServiceError):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


REFUSED = ServiceError("cannot reach the service at http://x: Connection refused")
DEGRADED = ServiceError("503: engine is starting (retry after 1 s)", 503)


def test_waits_until_healthy() -> None:
    clock = Clock()
    service = Answers("http://x", answers=[REFUSED, REFUSED, DEGRADED, HEALTHY])
    healthy, said = wait_ready(service, 60, None, clock=clock, pause=clock.pause)
    assert healthy is True and said == "healthy: engine running, models loaded: smollm2:135m"
    assert len(service.asked) == 4 and clock.now == 1.5


def test_gives_up_silently_when_the_server_is_gone_and_says_why_when_time_runs_out() -> None:
    clock = Clock()
    gone = wait_ready(
        Answers("http://x", answers=[REFUSED]), 60, 42, clock=clock, pause=clock.pause, is_alive=lambda p: False
    )
    assert gone == (None, "")
    clock = Clock()
    service = Answers("http://x", answers=[DEGRADED])
    healthy, said = wait_ready(service, 3, 42, clock=clock, pause=clock.pause, is_alive=lambda p: True)
    assert healthy is False and said.startswith("degraded: 503: engine is starting")
    assert clock.now == 3 and len(service.asked) == 7


def test_one_look_says_healthy_or_not() -> None:
    def look(answers: list[JsonDict | ServiceError]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(wait=None, pid=None, json=False)
        return run_health(args, Answers("http://x", answers=answers), out, err), out.getvalue(), err.getvalue()

    assert look([HEALTHY]) == (0, "http://x: healthy: engine running, models loaded: smollm2:135m\n", "")
    assert look([REFUSED]) == (1, "", f"http://x: {REFUSED}\n")
    assert look([{"status": "degraded", "reason": "engine stalled"}]) == (1, "", "http://x: degraded: engine stalled\n")
