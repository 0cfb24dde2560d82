"""bench/profile.py's summary of py-spy's collapsed stacks: shares per layer and per function, by self time."""

from __future__ import annotations

from bench.profile import summarise

RAW = """\
<module> (uvicorn/main.py:1);run (asyncio/base_events.py:10);handle (shared_ollama/api/http.py:5) 6
<module> (uvicorn/main.py:1);run (asyncio/base_events.py:10);_run_once (asyncio/base_events.py:1900) 3
<module> (uvicorn/main.py:1);data_received (/site-packages/uvicorn/protocols/http/httptools_impl.py:2) 1
not a stack line
"""


def test_self_time_goes_to_the_running_frames_layer() -> None:
    lines = summarise(RAW, top=2)
    assert lines[0] == "10 samples; by layer (self time):"
    assert "   60.0 %  the service's own code" in lines
    assert "   30.0 %  asyncio event loop" in lines
    assert "   10.0 %  HTTP server (uvicorn, httptools)" in lines
    assert lines[-2:] == [
        "   60.0 %  handle (shared_ollama/api/http.py:5)",
        "   30.0 %  _run_once (asyncio/base_events.py:1900)",
    ]


def test_no_samples_says_why() -> None:
    assert "ptrace" in summarise("")[0]
