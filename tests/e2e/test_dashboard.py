"""The status page (``/dashboard``) rendered by a real headless Chromium against a private real gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.ci import in_ci
from tests.support.processes import stop

pytestmark = pytest.mark.e2e

REQUEST_ID = "X-Shared-Ollama-Request-Id"
CHATS = 3
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--virtual-time-budget=8000",
]
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


def chromium_binary() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (scripts/core/test.sh installs it: apt-get install chromium)"
        if in_ci(os.environ):
            pytest.fail(f"CI must run the status page test: {reason}", pytrace=False)
        pytest.skip(reason)
    return path


class DomTestIds(HTMLParser):
    """The text of every element with a ``data-testid`` and the attributes of those elements."""

    def __init__(self) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.elements: list[dict[str, str]] = []
        self.body: dict[str, str] = {}
        self._open: list[tuple[str, str | None, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = found
        testid = found.get("data-testid")
        if testid is not None:
            self.elements.append(found)
        if tag not in VOID:
            self._open.append((tag, testid, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, testid, parts = self._open.pop()
            if testid is not None:
                self.text.setdefault(testid, " ".join("".join(parts).split()))
            if name == tag:
                return

    def handle_data(self, data: str) -> None:
        for _, testid, parts in self._open:
            if testid is not None:
                parts.append(data)

    def rows(self, testid: str) -> list[dict[str, str]]:
        return [e for e in self.elements if e.get("data-testid") == testid]


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def private_gateway(model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway of this module only: nothing else sends it traffic, so its figures stay put."""
    url, proc = start_gateway(model_store, tmp_path_factory.mktemp("dash"), artifacts_dir / "gateway-dashboard.log")
    try:
        yield url
    finally:
        stop(proc)


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def test_dashboard_shows_the_live_figures(private_gateway: str, artifacts_dir: Path, tmp_path: Path) -> None:
    binary = chromium_binary()
    with httpx.Client(base_url=private_gateway, timeout=120) as http:
        for i in range(CHATS):
            chat = http.post(
                "/api/v1/chat",
                json={
                    "model": "smollm2:135m",
                    "messages": [{"role": "user", "content": f"Say {i}."}],
                    "options": {"num_predict": 4},
                },
            )
            assert chat.status_code == 200, chat.text
        unknown = http.post(
            "/api/v1/chat", json={"model": "no-such-model:1b", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert unknown.status_code == 404, unknown.text
        malformed = http.post("/api/v1/chat", content=b'{"messages": [', headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400, malformed.text
        error_ids = {unknown.headers[REQUEST_ID], malformed.headers[REQUEST_ID]}

        # The page polls operational endpoints only, which are not counted as traffic: the figures it shows
        # are the ones the JSON endpoints give right after.
        url = f"{private_gateway}/dashboard"
        shot = artifacts_dir / "dashboard.png"
        shot.unlink(missing_ok=True)
        run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1100", url)
        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
        (artifacts_dir / "dashboard.dom.html").write_text(dom, encoding="utf-8")

        metrics = http.get("/api/v1/metrics").json()
        queue = http.get("/api/v1/queue/stats").json()
        health = http.get("/api/v1/health").json()
        analytics = http.get("/api/v1/analytics", params={"window": "1h", "group_by": "minute"}).json()
        perf = http.get("/api/v1/performance/stats").json()
        usage = http.get("/api/v1/usage", params={"window": "24h", "group_by": "tenant,model"}).json()

    page = DomTestIds()
    page.feed(dom)
    page.close()
    shown = page.text
    assert page.body.get("data-loaded") == "1", f"the page never finished a refresh: {dom[:2000]}"

    assert shown["engine-state"] == "running" == health["engine"]["state"]
    assert shown["service-status"] == "healthy"
    assert number(shown["engine-restarts"]) == health["engine"]["restarts"]
    assert number(shown["queue-depth"]) == 0 == queue["queue_depth"]
    assert number(shown["slots-in-use"]) == 0 == queue["engine_slots"]["in_use"]
    assert number(shown["slots-total"]) == queue["engine_slots"]["total"]

    requests = metrics["requests"]
    assert requests["errors"] == 2
    assert requests["total"] == CHATS + 2, "watching the page adds no traffic"
    assert number(shown["requests-total"]) == requests["total"]
    assert number(shown["errors-total"]) == requests["errors"]
    tokens = metrics["tokens"]
    assert tokens["generated"] > 0
    assert number(shown["tokens-total"]) == tokens["prompt"] + tokens["generated"]
    assert shown["cache-hit-rate"] == (
        "—" if metrics["cache"]["hit_rate"] is None else f"{metrics['cache']['hit_rate'] * 100:.1f}%"
    )

    assert number(shown["last-hour-requests"]) == analytics["totals"]["requests"] == CHATS + 2
    assert number(shown["last-hour-errors"]) == analytics["totals"]["errors"] == 2
    assert "<svg" in dom and "<rect" in dom, "the last hour chart was not drawn"

    rows = page.rows("error-row")
    assert {r["data-request-id"] for r in rows} == error_ids
    assert {r["request_id"] for r in analytics["recent_errors"]} == error_ids

    assert "smollm2:135m" in health["engine"]["loaded_models"]
    assert "smollm2:135m" in {r["data-model"] for r in page.rows("loaded-model")}
    assert not any(m["size_estimated"] for m in health["engine"]["models"]), "measured at load (engine/footprint.py)"
    assert "(estimated)" not in shown["loaded-model-size"], "a measured size is shown as it is"
    assert set(perf["models"]) <= {r["data-model"] for r in page.rows("perf-row")}
    assert "smollm2:135m" in perf["models"]

    one = {"tenant": "default", "model": "smollm2:135m", **usage["totals"]}
    assert usage["rows"] == [one], "the three chats, one project, one model"
    assert usage["totals"]["requests"] == CHATS
    assert [
        (r["data-tenant"], r["data-model"], number(r["data-requests"]), number(r["data-tokens"]))
        for r in page.rows("usage-row")
    ] == [("default", "smollm2:135m", CHATS, usage["totals"]["total_tokens"])], "the usage table per project"
    assert usage["totals"]["total_tokens"] == tokens["prompt"] + tokens["generated"]
    hosts = [(r["data-host"], r["data-state"]) for r in page.rows("host-row")]
    assert hosts == [("local", "up")], "the engine hosts table: one engine, the local host"

    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000, f"the screenshot is suspiciously small ({len(png)} bytes)"
