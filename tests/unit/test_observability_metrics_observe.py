"""Counting finished requests: the series ``Metrics.observe`` leaves are what direct label look-ups make.

``observe`` keeps each label set's children after the first look-up (tested here against a registry fed by
``labels()`` on every request); a series appears only once something was counted under it.
"""

from __future__ import annotations

from typing import Any

from shared_ollama.service.observability.metrics import Metrics
from shared_ollama.service.observability.records import RequestRecord


def _rec(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = {"ts": 0.0, "request_id": "r", "surface": "ollama", "route": "/api/chat", "status": 200}
    return RequestRecord(**{**base, **fields})


RECORDS = [
    _rec(engine=True, latency=0.02, queue_wait=0.001, prompt_tokens=3, completion_tokens=8, eval_seconds=0.1),
    _rec(engine=True, latency=0.5, queue_wait=0.2, prompt_tokens=5, completion_tokens=2, eval_seconds=0.05, ttft=0.1),
    _rec(engine=True, host="h1", latency=0.5, prompt_tokens=5, completion_tokens=2, eval_seconds=0.05, ttft=0.1),
    _rec(engine=True, host="h2", latency=0.5, prompt_tokens=5, completion_tokens=2, eval_seconds=0.05, ttft=0.2),
    _rec(status=429, code="tenant_busy", latency=0.001),
    _rec(status=200, cache="hit", latency=0.0004, prompt_tokens=3),
    _rec(surface="openai", route="/v1/chat/completions", engine=True, latency=0.03, completion_tokens=4),
    _rec(status=503, code="queue_full", latency=0.001),
    _rec(engine=True, latency=0.02, queue_wait=0.001, prompt_tokens=3, completion_tokens=8, eval_seconds=0.1),
]
LABELS = [
    ("m", "web"),
    ("m", "web"),
    ("m", "web"),
    ("m", "web"),
    ("", "batch"),
    ("m", "web"),
    ("other", "web"),
    ("", "batch"),
    ("m", "ops"),
]


def _by_hand(metrics: Metrics, rec: RequestRecord, model: str, tenant: str) -> None:
    """What ``observe`` does, with a label look-up for every series on every request."""
    model, tenant, host = model or "-", tenant or "-", rec.host or "-"
    metrics.requests.labels(rec.surface, rec.route, model, tenant, str(rec.status), rec.code, host).inc()
    metrics.latency.labels(rec.surface, model).observe(rec.latency)
    if rec.status >= 400 and not rec.engine:
        metrics.rejections.labels(rec.code, tenant).inc()
    if rec.engine:
        metrics.queue_wait.labels(tenant).observe(rec.queue_wait)
    if rec.ttft is not None:
        metrics.ttft.labels(model, host).observe(rec.ttft)
    if rec.prompt_tokens:
        metrics.tokens.labels(model, tenant, "prompt", host).inc(rec.prompt_tokens)
    if rec.completion_tokens:
        metrics.tokens.labels(model, tenant, "generated", host).inc(rec.completion_tokens)
        if rec.eval_seconds > 0:
            metrics.tps.labels(model, host).observe(rec.completion_tokens / rec.eval_seconds)
    if rec.cache != "none":
        metrics.cache.labels(rec.cache).inc()


def _samples(metrics: Metrics) -> list[str]:
    """The exposition's sample lines, without the ``_created`` timestamps (they differ between registries)."""
    lines = metrics.exposition().decode().splitlines()
    return sorted(line for line in lines if not line.startswith("#") and "_created" not in line)


def test_observed_series_are_the_ones_direct_label_lookups_make() -> None:
    observed, by_hand = Metrics(lambda: None), Metrics(lambda: None)
    for _ in range(3):  # the second and third rounds use the kept children
        for rec, (model, tenant) in zip(RECORDS, LABELS, strict=True):
            observed.observe(rec, model=model, tenant=tenant)
            _by_hand(by_hand, rec, model, tenant)
    assert _samples(observed) == _samples(by_hand)


def test_a_series_appears_only_once_something_was_counted_under_it() -> None:
    metrics = Metrics(lambda: None)
    metrics.observe(_rec(latency=0.01), model="m", tenant="web")  # no engine, tokens, cache or rejection
    samples = "\n".join(_samples(metrics))
    for name in ("rejections", "queue_wait", "time_to_first_token", "tokens_total", "tokens_per_second", "cache"):
        assert f"shared_ollama_{name}" not in samples, name


def test_each_engine_host_has_its_own_series() -> None:
    metrics = Metrics(lambda: None)
    for rec, (model, tenant) in zip(RECORDS, LABELS, strict=True):
        metrics.observe(rec, model=model, tenant=tenant)
    samples = _samples(metrics)

    def series(name: str, host: str) -> list[str]:
        return [line for line in samples if line.startswith(name) and f'host="{host}"' in line]

    for host in ("h1", "h2"):
        assert len(series("shared_ollama_requests_total{", host)) == 1, host
        assert series("shared_ollama_time_to_first_token_seconds_count{", host) == [
            f'shared_ollama_time_to_first_token_seconds_count{{host="{host}",model="m"}} 1.0'
        ]
        assert len(series("shared_ollama_tokens_total{", host)) == 2, host  # prompt and generated
        assert len(series("shared_ollama_generation_tokens_per_second_count{", host)) == 1, host
    assert series("shared_ollama_requests_total{", "-"), "requests that reached no engine host are counted under -"
