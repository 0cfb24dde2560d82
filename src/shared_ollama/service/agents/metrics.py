"""Agent runs, steps, tool calls and tool errors per agent and tenant, on the service's Prometheus registry.

Label values come from bounded sets (``BoundedNames``): the first ``max_agents`` agent names and the tenants the
request metrics already name keep labels of their own, later ones are counted as ``other``."""

from __future__ import annotations

from prometheus_client import Counter

from shared_ollama.service.observability.labels import BoundedNames
from shared_ollama.service.observability.metrics import Metrics


class AgentMetrics:
    def __init__(self, metrics: Metrics, *, max_agents: int = 100, max_tenants: int = 100) -> None:
        target = None if metrics.multiprocess else metrics.registry
        self._agents = BoundedNames(max_agents)
        self._tenants = BoundedNames(max_tenants)
        self.runs = Counter(
            "shared_ollama_agent_runs",
            "Agent runs by how they stopped",
            ["agent", "tenant", "stopped"],
            registry=target,
        )
        self.steps = Counter("shared_ollama_agent_steps", "Agent model calls", ["agent", "tenant"], registry=target)
        self.tool_calls = Counter(
            "shared_ollama_agent_tool_calls", "Agent tool calls", ["agent", "tenant", "tool"], registry=target
        )
        self.tool_errors = Counter(
            "shared_ollama_agent_tool_errors",
            "Agent tool calls that failed",
            ["agent", "tenant", "tool"],
            registry=target,
        )
        self._tools = BoundedNames(200)

    def run(self, agent: str, tenant: str, summary: dict[str, object]) -> None:
        """Count one finished run from its ``done`` summary (``stopped``, ``usage``, ``steps``)."""
        a, t = self._agents.label(agent), self._tenants.label(tenant)
        self.runs.labels(a, t, str(summary.get("stopped"))).inc()
        usage = summary.get("usage")
        if isinstance(usage, dict):
            self.steps.labels(a, t).inc(int(usage.get("model_calls") or 0))
        steps = summary.get("steps")
        for step in steps if isinstance(steps, list) else []:
            if isinstance(step, dict) and step.get("type") == "tool_result":
                tool = self._tools.label(str(step.get("name")))
                self.tool_calls.labels(a, t, tool).inc()
                if step.get("error"):
                    self.tool_errors.labels(a, t, tool).inc()
