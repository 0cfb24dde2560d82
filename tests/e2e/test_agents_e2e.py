"""Agents end to end: the real gateway, the real embedded engine (SmolLM2-135M, MiniLM for documents), a real stdio
MCP server, the official ``openai`` client for ``agent:<name>`` models.

SmolLM2 has no tool template, so these agents call tools the ``grammar`` way (the engine's grammar holds each
decision to a valid call): the tool calls below are the real model's, constrained, not scripted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import start_gateway
from tests.support.processes import poll, stop
from tests.support.raw_http import post_raw

pytestmark = pytest.mark.e2e

MODEL = "smollm2:135m"
TENANT = {"X-Shared-Ollama-Project": "agents-e2e"}
OTHER = {"X-Shared-Ollama-Project": "agents-other"}
GREEDY = {"temperature": 0}
MCP_SERVER = Path(__file__).resolve().parents[1] / "support" / "mcp_server.py"


@pytest.fixture(scope="module")
def agents_url(model_store: Path, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway of its own: an MCP server configured for every tenant, a short tool timeout."""
    data = tmp_path_factory.mktemp("agents-gw")
    config = data / "mcp.yaml"
    config.write_text(
        orjson.dumps(
            {"servers": {"notes": {"command": sys.executable, "args": [str(MCP_SERVER)], "tenants": ["*"]}}}
        ).decode()
    )
    env = {
        "SHARED_OLLAMA_MCP_CONFIG": str(config),
        "SHARED_OLLAMA_AGENT_TOOL_TIMEOUT_SECONDS": "3",
        "SHARED_OLLAMA_ENGINE_NUM_PARALLEL": "1",
    }
    url, proc = start_gateway(model_store, data, artifacts_dir / "gateway-agents-e2e.log", env)
    try:

        def mcp_up() -> bool:
            servers = httpx.get(f"{url}/api/v1/agents/tools", headers=TENANT).json()["mcp_servers"]
            return [s["state"] for s in servers] == ["up"]

        poll(mcp_up, "the MCP server up (it starts in the background)", limit=30)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def http(agents_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agents_url, timeout=180, headers=TENANT) as client:
        yield client


def create(http: httpx.Client, **definition: Any) -> dict[str, Any]:
    response = http.post("/api/v1/agents/create", json={"model": MODEL, "options": GREEDY, **definition})
    assert response.status_code == 201, response.text
    return dict(response.json())


def tool_results(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in run["steps"] if s["type"] == "tool_result"]


@pytest.fixture(scope="module")
def calculator(http: httpx.Client) -> str:
    create(http, name="calc", tools=["calculator"], tool_choice="required", system="You are good at arithmetic.")
    return "calc"


def test_the_real_model_calls_the_calculator_and_answers_with_its_result(http: httpx.Client, calculator: str) -> None:
    run = http.post(f"/api/v1/agents/{calculator}/run", json={"input": "What is 17 * 23?"}).json()
    assert run["stopped"] == "done", run
    [call] = [s for s in run["steps"] if s["type"] == "tool_call"][:1]
    assert call["name"] == "calculator" and "17" in call["arguments"]["expression"]
    assert tool_results(run)[0]["content"] == "391" and not tool_results(run)[0]["error"]
    assert "391" in run["output"]
    assert run["usage"]["model_calls"] >= 2 and run["usage"]["tool_calls"] >= 1
    assert run["usage"]["prompt_tokens"] > 0 and run["usage"]["completion_tokens"] > 0
    stored = http.get(f"/api/v1/agents/{calculator}/runs/{run['run_id']}").json()
    assert stored["output"] == run["output"] and stored["steps"] == run["steps"]
    assert any(m["role"] == "tool" and m["content"] == "391" for m in stored["messages"])
    listed = http.get(f"/api/v1/agents/{calculator}/runs").json()["runs"]
    assert listed[0]["run_id"] == run["run_id"]
    metrics = http.get("/metrics").text
    assert 'shared_ollama_agent_runs_total{agent="calc",stopped="done",tenant="agents-e2e"}' in metrics
    assert 'shared_ollama_agent_tool_calls_total{agent="calc",tenant="agents-e2e",tool="calculator"}' in metrics


def test_a_streamed_run_sends_its_events_in_order(http: httpx.Client, calculator: str) -> None:
    with http.stream(
        "POST", f"/api/v1/agents/{calculator}/run", json={"input": "What is 12 + 30?", "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        events = [orjson.loads(line) for line in r.iter_lines() if line]
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["step_started", "tool_call", "tool_result"], kinds
    assert kinds[-1] == "done" and "message_delta" in kinds
    done = events[-1]
    assert "".join(e["content"] for e in events if e["type"] == "message_delta") == done["output"]
    assert events[2]["content"] == "42" and done["stopped"] == "done"


def test_max_steps_stops_a_run_that_still_calls_tools(http: httpx.Client, calculator: str) -> None:
    run = http.post(f"/api/v1/agents/{calculator}/run", json={"input": "What is 2 ** 10?", "max_steps": 1}).json()
    assert run["stopped"] == "max_steps" and run["usage"]["model_calls"] == 1
    assert tool_results(run)[0]["content"] == "1024"


def test_a_session_continues_across_runs(http: httpx.Client, calculator: str) -> None:
    first = http.post(f"/api/v1/agents/{calculator}/run", json={"input": "What is 6 * 7?"}).json()
    again = http.post(
        f"/api/v1/agents/{calculator}/run", json={"input": "And 5 * 5?", "session": first["session"]}
    ).json()
    stored = http.get(f"/api/v1/agents/{calculator}/runs/{again['run_id']}").json()
    contents = [m["content"] for m in stored["messages"]]
    assert "What is 6 * 7?" in contents and "And 5 * 5?" in contents and "42" in contents


def test_search_documents_finds_the_planted_fact_through_the_embedding_model(http: httpx.Client) -> None:
    create(http, name="librarian", tools=["search_documents"], tool_choice="required")
    facts = [
        ("vault", "The secret code of the blue vault is 4417. Only the night guard knows it."),
        ("garden", "The garden has roses, tulips and a small pond with goldfish."),
        ("kitchen", "The kitchen oven was replaced in March and now bakes bread evenly."),
    ]
    for title, text in facts:
        added = http.post("/api/v1/agents/librarian/documents", json={"title": title, "text": text})
        assert added.status_code == 201 and added.json()["chunks"] == 1, added.text
    assert len(http.get("/api/v1/agents/librarian/documents").json()["documents"]) == 3
    run = http.post("/api/v1/agents/librarian/run", json={"input": "What is the secret code of the blue vault?"})
    result = tool_results(run.json())[0]
    assert not result["error"] and "4417" in result["content"]
    first = result["content"].splitlines()
    assert any("4417" in line for line in first[:3]), "the planted fact is the closest passage"


def test_an_mcp_servers_tools_are_listed_and_called(http: httpx.Client) -> None:
    tools = http.get("/api/v1/agents/tools").json()
    names = {t["name"] for t in tools["tools"]}
    assert {"calculator", "current_time", "search_documents", "notes__add"} <= names
    assert "http_get" not in names, "off unless the admin lists hosts"
    assert [s["state"] for s in tools["mcp_servers"]] == ["up"]
    create(http, name="adder", tools=["notes__add"], tool_choice="required")
    run = http.post("/api/v1/agents/adder/run", json={"input": "Add 40 and 2."}).json()
    call = next(s for s in run["steps"] if s["type"] == "tool_call")
    assert call["name"] == "notes__add"
    result = tool_results(run)[0]
    assert not result["error"] and result["content"] == str(call["arguments"]["a"] + call["arguments"]["b"])


def test_a_hung_mcp_tool_is_a_tool_error_and_the_run_goes_on(http: httpx.Client) -> None:
    create(http, name="waiter", tools=["notes__hang"], tool_choice="required", max_steps=2)
    run = http.post("/api/v1/agents/waiter/run", json={"input": "Wait for me."}).json()
    result = tool_results(run)[0]
    assert result["error"] and "timed out" in result["content"]
    assert run["stopped"] in ("done", "max_steps")


def test_the_openai_sdk_uses_an_agent_as_a_model(agents_url: str, calculator: str) -> None:
    client = openai.OpenAI(base_url=f"{agents_url}/v1", api_key="unused", max_retries=0, default_headers=TENANT)
    ask = [{"role": "user", "content": "What is 17 * 23?"}]
    answer = client.chat.completions.create(model=f"agent:{calculator}", messages=ask)  # type: ignore[arg-type]
    assert "391" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(model=f"agent:{calculator}", messages=ask, stream=True)  # type: ignore[arg-type]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "391" in text
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=f"agent:{calculator}", messages=ask, temperature=0.5)  # type: ignore[arg-type]
    assert refused.value.body["param"] == "temperature"  # type: ignore[index]


def test_bad_definitions_are_refused_naming_the_field(http: httpx.Client, calculator: str) -> None:
    cases = [
        ({"name": "x1", "model": MODEL, "tools": ["no_such_tool"]}, 400, "tools"),
        ({"name": "x2", "model": "no-such-model:1b"}, 400, "model"),
        ({"name": "x3", "model": MODEL, "max_steps": 1000}, 400, "max_steps"),
        ({"name": "x4", "model": MODEL, "colour": "red"}, 400, "colour"),
        ({"name": calculator, "model": MODEL}, 409, None),
    ]
    for definition, status, param in cases:
        response = http.post("/api/v1/agents/create", json=definition)
        assert response.status_code == status, (definition, response.text)
        if param is not None:
            assert param in response.text, response.text
    assert http.get(f"/api/v1/agents/{calculator}", headers=OTHER).status_code == 404, "another tenant's agent"
    assert http.post(f"/api/v1/agents/{calculator}/run", json={}).status_code == 400


def test_a_client_that_leaves_stops_the_run_and_its_generation(http: httpx.Client, agents_url: str) -> None:
    create(http, name="counter", options={"num_predict": 1024, "temperature": 0})
    parts = urlsplit(agents_url)
    body = {"input": "Count from 1 to 1000, one number per line.", "stream": True}
    conn = post_raw(parts.hostname or "127.0.0.1", parts.port or 80, "/api/v1/agents/counter/run", body, TENANT)

    def generations() -> int:
        return int(http.get("/api/ps").json().get("generations", 0))

    try:
        poll(lambda: generations() >= 1, "the engine generating the agent's answer", limit=60)
    finally:
        conn.close()
    poll(lambda: generations() == 0, "the engine stopping after the run's client left", limit=5.0)
