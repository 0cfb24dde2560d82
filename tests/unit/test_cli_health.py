"""``shared-ollama health --wait``: looks until healthy (bounded by a fake clock), gives up silently when the
server's process is gone, says why when time runs out, and with ``--pid`` takes no other instance's health for
its server's."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from shared_ollama.cli_health import process_started, run_health, wait_ready
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
        Answers("http://x", answers=[REFUSED]), 60, 42, clock=clock, pause=clock.pause, started=lambda p: None
    )
    assert gone == (None, "")
    clock = Clock()
    service = Answers("http://x", answers=[DEGRADED])
    healthy, said = wait_ready(service, 3, 42, clock=clock, pause=clock.pause, started=lambda p: 0.0)
    assert healthy is False and said.startswith("degraded: 503: engine is starting")
    assert clock.now == 3 and len(service.asked) == 7


NOW = 1_000_000.0
"""The fake wall clock: our server's process started at NOW - 10."""


def healthy_since(seconds: float) -> JsonDict:
    return {**HEALTHY, "uptime_seconds": seconds}


def test_a_healthy_answer_counts_only_while_the_server_lives() -> None:
    clock = Clock()
    lives = iter([True, False])
    gone = wait_ready(
        Answers("http://x", answers=[healthy_since(1.0)]),
        60,
        42,
        clock=clock,
        pause=clock.pause,
        started=lambda p: NOW - 10 if next(lives) else None,
        now=lambda: NOW,
    )
    assert gone == (True, "healthy: engine running, models loaded: smollm2:135m"), "alive: ours"
    clock = Clock()
    dead = wait_ready(
        Answers("http://x", answers=[healthy_since(1.0)]),
        60,
        42,
        clock=clock,
        pause=clock.pause,
        started=lambda p: None,
        now=lambda: NOW,
    )
    assert dead == (None, ""), "our server failed (to bind): whoever answers is not it"


def test_another_instance_on_the_port_is_not_taken_for_ours() -> None:
    # Another service up for an hour answers while ours (started 10 s ago) has not bound the port yet.
    clock = Clock()
    other = Answers("http://x", answers=[healthy_since(3600.0)])
    healthy, said = wait_ready(
        other, 2, 42, clock=clock, pause=clock.pause, started=lambda p: NOW - 10, now=lambda: NOW
    )
    assert healthy is False and "started before process 42: another instance has the port" in said
    assert clock.now == 2, "kept looking until the limit"
    # Ours failing to bind then exits: silence, not "ready".
    clock = Clock()
    alive = iter([NOW - 10, NOW - 10, None])
    ended = wait_ready(
        Answers("http://x", answers=[healthy_since(3600.0)]),
        60,
        42,
        clock=clock,
        pause=clock.pause,
        started=lambda p: next(alive),
        now=lambda: NOW,
    )
    assert ended == (None, "")
    # Ours, once it answers: a service younger than the process (within the clock's slack) is accepted.
    clock = Clock()
    ours = Answers("http://x", answers=[healthy_since(3600.0), healthy_since(11.5)])
    ready = wait_ready(ours, 60, 42, clock=clock, pause=clock.pause, started=lambda p: NOW - 10, now=lambda: NOW)
    assert ready[0] is True and len(ours.asked) == 2


def test_the_start_of_a_live_process_is_known_and_a_reaped_one_is_gone() -> None:
    began = process_started(os.getpid())
    assert began is not None and began <= time.time()
    done = subprocess.Popen(["true"])
    done.wait(timeout=10)
    assert process_started(done.pid) is None


def test_one_look_says_healthy_or_not() -> None:
    def look(answers: list[JsonDict | ServiceError]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(wait=None, pid=None, json=False)
        return run_health(args, Answers("http://x", answers=answers), out, err), out.getvalue(), err.getvalue()

    assert look([HEALTHY]) == (0, "http://x: healthy: engine running, models loaded: smollm2:135m\n", "")
    assert look([REFUSED]) == (1, "", f"http://x: {REFUSED}\n")
    assert look([{"status": "degraded", "reason": "engine stalled"}]) == (1, "", "http://x: degraded: engine stalled\n")
