"""Prometheus metrics: counters and histograms fed by finished requests, gauges read from live state.

Each app owns its registry (no global state). With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's own
switch, for several worker processes), values are kept in that directory and ``/metrics`` aggregates every
process's files; the live gauges then describe the process that answered the scrape. Model and tenant label
values come from bounded sets (``labels.py``), so client-chosen names cannot grow the series without limit; the
``host`` label is the engine host that answered (``local`` without a fleet, ``-`` for none: a rejection, a cache
hit), a name from configuration, so a bounded set too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared_ollama.service.observability.records import RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 150)
_MAX_CACHED_LABEL_SETS = 10_000
TPS_BUCKETS = (1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 300, 500, 1000)


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the gauges show, read at scrape time."""

    queue_depth: int
    slots_total: int
    slots_in_use: int
    in_flight: dict[tuple[str, str], int]
    engine_up: bool
    engine_restarts: int
    loaded_models: list[str]
    image_bytes_saved: int
    model_load_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds each loaded model's current load took (engines that report it: the embedded one)."""
    hosts: list[HostFigures] = field(default_factory=list)
    """Each engine host's figures (one, ``local``, without a fleet)."""


@dataclass(frozen=True, slots=True)
class HostFigures:
    """One engine host at scrape time (the host names come from configuration: a bounded set)."""

    name: str
    up: bool
    slots: int
    in_use: int
    requests: int | None = None
    """Requests the host answered (fleet hosts; None: not counted per host)."""
    failures: int | None = None


class _LiveCollector(Collector):
    def __init__(self, read: Callable[[], LiveState | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        if state is None:
            return
        yield GaugeMetricFamily("shared_ollama_queue_depth", "Requests waiting for an engine slot", state.queue_depth)
        slots = GaugeMetricFamily("shared_ollama_engine_slots", "Engine slots", labels=["state"])
        slots.add_metric(["total"], state.slots_total)
        slots.add_metric(["in_use"], state.slots_in_use)
        yield slots
        in_flight = GaugeMetricFamily(
            "shared_ollama_tenant_in_flight",
            "Requests in flight (queued or running) per tenant",
            labels=["tenant", "kind"],
        )
        for (tenant, kind), count in sorted(state.in_flight.items()):
            in_flight.add_metric([tenant, kind], count)
        yield in_flight
        yield GaugeMetricFamily("shared_ollama_engine_up", "1 when the engine answers", int(state.engine_up))
        yield GaugeMetricFamily(
            "shared_ollama_engine_restarts", "Engine restarts by the supervisor since start-up", state.engine_restarts
        )
        loaded = GaugeMetricFamily("shared_ollama_model_loaded", "Models loaded in the engine", labels=["model"])
        for model in state.loaded_models:
            loaded.add_metric([model], 1)
        yield loaded
        yield GaugeMetricFamily(
            "shared_ollama_loaded_models", "Number of models loaded in the engine", len(state.loaded_models)
        )
        load = GaugeMetricFamily(
            "shared_ollama_model_load_seconds", "Seconds the current load of each loaded model took", labels=["model"]
        )
        for model, seconds in sorted(state.model_load_seconds.items()):  # loaded models only: a bounded set
            load.add_metric([model], seconds)
        yield load
        yield from _host_families(state.hosts)
        yield GaugeMetricFamily(
            "shared_ollama_image_bytes_saved",
            "Image bytes not sent to the engine thanks to compression",
            state.image_bytes_saved,
        )


def _host_families(hosts: list[HostFigures]) -> Iterator[Metric]:
    up = GaugeMetricFamily("shared_ollama_engine_host_up", "1 when the engine host takes requests", labels=["host"])
    slots = GaugeMetricFamily("shared_ollama_engine_host_slots", "Engine host slots", labels=["host", "state"])
    requests = CounterMetricFamily(
        "shared_ollama_engine_host_requests", "Requests answered by each engine host", labels=["host"]
    )
    failures = CounterMetricFamily(
        "shared_ollama_engine_host_failures", "Requests an engine host failed (connection, 5xx)", labels=["host"]
    )
    for host in hosts:
        up.add_metric([host.name], int(host.up))
        slots.add_metric([host.name, "total"], host.slots)
        slots.add_metric([host.name, "in_use"], host.in_use)
        if host.requests is not None:
            requests.add_metric([host.name], host.requests)
        if host.failures is not None:
            failures.add_metric([host.name], host.failures)
    yield from (up, slots, requests, failures)


class Metrics:
    def __init__(self, live: Callable[[], LiveState | None]) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        target: CollectorRegistry | None = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)
            target = None  # values go to the shared directory; the collector above reads them all
        self.registry.register(_LiveCollector(live))
        self.requests = Counter(
            "shared_ollama_requests",
            "Requests by surface, route, model, tenant, HTTP status, code and engine host",
            ["surface", "route", "model", "tenant", "status", "code", "host"],
            registry=target,
        )
        self.rejections = Counter(
            "shared_ollama_rejections", "Requests turned away, by code", ["code", "tenant"], registry=target
        )
        self.latency = Histogram(
            "shared_ollama_request_duration_seconds",
            "Time from arrival to the last byte",
            ["surface", "model"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.queue_wait = Histogram(
            "shared_ollama_queue_wait_seconds",
            "Time waiting for an engine slot",
            ["tenant"],
            buckets=WAIT_BUCKETS,
            registry=target,
        )
        self.ttft = Histogram(
            "shared_ollama_time_to_first_token_seconds",
            "Time from arrival to the first streamed token",
            ["model", "host"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.tokens = Counter(
            "shared_ollama_tokens", "Prompt and generated tokens", ["model", "tenant", "kind", "host"], registry=target
        )
        self.tps = Histogram(
            "shared_ollama_generation_tokens_per_second",
            "Generation speed from the engine's eval timings",
            ["model", "host"],
            buckets=TPS_BUCKETS,
            registry=target,
        )
        self.cache = Counter("shared_ollama_cache_requests", "Cache lookups by result", ["result"], registry=target)
        self._children: dict[tuple[str, str, str, str, int, str, str], tuple[Any, Any]] = {}
        self._other_children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def observe(self, rec: RequestRecord, *, model: str, tenant: str) -> None:
        """Count ``rec`` under the ``model`` and ``tenant`` labels (from bounded sets: ``labels.py``) and its host."""
        model = model or "-"
        tenant = tenant or "-"
        host = rec.host or "-"
        key = (rec.surface, rec.route, model, tenant, rec.status, rec.code, host)
        children = self._children.get(key)
        if children is None:  # label look-ups validate and lock: done once per label set, not per request
            children = (
                self.requests.labels(rec.surface, rec.route, model, tenant, str(rec.status), rec.code, host),
                self.latency.labels(rec.surface, model),
            )
            if len(self._children) < _MAX_CACHED_LABEL_SETS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(rec.latency)
        if rec.status >= 400 and not rec.engine:
            self._child(self.rejections, rec.code, tenant).inc()
        if rec.engine:
            self._child(self.queue_wait, tenant).observe(rec.queue_wait)
        if rec.ttft is not None:
            self._child(self.ttft, model, host).observe(rec.ttft)
        if rec.prompt_tokens:
            self._child(self.tokens, model, tenant, "prompt", host).inc(rec.prompt_tokens)
        if rec.completion_tokens:
            self._child(self.tokens, model, tenant, "generated", host).inc(rec.completion_tokens)
            if rec.eval_seconds > 0:
                self._child(self.tps, model, host).observe(rec.completion_tokens / rec.eval_seconds)
        if rec.cache != "none":
            self._child(self.cache, rec.cache).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set (a series appears when first counted)."""
        key = (id(metric), labels)
        child = self._other_children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._other_children) < _MAX_CACHED_LABEL_SETS:
                self._other_children[key] = child
        return child

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))
