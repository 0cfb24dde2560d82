"""Accounting of finished requests: Prometheus metrics, the performance window, analytics, the access log.

``Telemetry.record`` is called once per request, after its last byte (by the request-id middleware). It does
in-memory work only — counters, a bounded window, an append to the analytics writer's queue — so the
request path never waits for a disk.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.labels import UNKNOWN, RecordLabels
from shared_ollama.service.observability.metrics import LiveState, Metrics
from shared_ollama.service.observability.perf import PerformanceWindow
from shared_ollama.service.observability.records import RequestRecord

log = logging.getLogger("shared_ollama.access")
JsonDict = dict[str, Any]


class Telemetry:
    def __init__(
        self,
        analytics: AnalyticsStore,
        live: Callable[[], LiveState | None],
        *,
        labels: RecordLabels,
        access_log: bool = True,
    ) -> None:
        self.analytics = analytics
        self.labels = labels
        """Bounded label values for the metrics, the performance window and the per-tenant counters."""
        self.access_log = access_log
        self.metrics = Metrics(live)
        self.perf = PerformanceWindow()
        self.started = time.time()
        self._live = live
        self._by_code: Counter[str] = Counter()
        self._by_surface: Counter[str] = Counter()
        self._by_tenant: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._cache: Counter[str] = Counter()
        self._recent: deque[tuple[float, bool]] = deque(maxlen=20_000)
        self.recent_errors: deque[JsonDict] = deque(maxlen=50)

    def record(self, rec: RequestRecord) -> None:
        model, tenant = self.labels.model(rec), self.labels.tenant(rec)
        self.metrics.observe(rec, model=model, tenant=tenant)
        self.perf.add(rec, "" if model == UNKNOWN else model)
        self.analytics.add(rec)
        failed = rec.status >= 400 and rec.code != "client_closed"  # a client that went away is no error of ours
        self._by_code[rec.code] += 1
        self._by_surface[rec.surface] += 1
        self._by_tenant[tenant or "-"] += 1
        self._tokens["prompt"] += rec.prompt_tokens
        self._tokens["generated"] += rec.completion_tokens
        if rec.cache != "none":
            self._cache[rec.cache] += 1
        self._recent.append((rec.ts, failed))
        if failed:
            self.recent_errors.appendleft(
                {
                    "ts": round(rec.ts, 3),
                    "request_id": rec.request_id,
                    "tenant": rec.tenant,
                    "route": rec.route,
                    "model": rec.model,
                    "status": rec.status,
                    "code": rec.code,
                    "host": rec.host,
                }
            )
        if self.access_log and log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s",
                rec.route,
                rec.status,
                rec.code,
                extra={
                    "request_id": rec.request_id,
                    "fields": {
                        "tenant": rec.tenant,
                        "model": rec.model,
                        "surface": rec.surface,
                        "status": rec.status,
                        "code": rec.code,
                        "latency_ms": round(rec.latency * 1000, 2),
                        "queue_wait_ms": round(rec.queue_wait * 1000, 2),
                        "prompt_tokens": rec.prompt_tokens,
                        "completion_tokens": rec.completion_tokens,
                        "cache": rec.cache,
                    },
                },
            )

    def summary(self) -> JsonDict:
        """The essentials as JSON (``/api/v1/metrics``): counts since start-up, the last hour, live state."""
        now = time.time()
        hour = [failed for ts, failed in self._recent if ts >= now - 3600]
        lookups = sum(self._cache.values())
        hits = self._cache["hit"] + self._cache["semantic-hit"]
        live = self._live()
        total = sum(self._by_code.values())
        return {
            "uptime_seconds": round(now - self.started, 3),
            "requests": {
                "total": total,
                "errors": total - self._by_code["ok"] - self._by_code["client_closed"],
                "by_code": dict(self._by_code.most_common()),
                "by_surface": dict(self._by_surface.most_common()),
                "by_tenant": dict(self._by_tenant.most_common()),
                "last_hour": {"total": len(hour), "errors": sum(hour)},
            },
            "tokens": {"prompt": self._tokens["prompt"], "generated": self._tokens["generated"]},
            "cache": {**dict(self._cache), "hit_rate": round(hits / lookups, 4) if lookups else None},
            "queue": None
            if live is None
            else {
                "depth": live.queue_depth,
                "slots_total": live.slots_total,
                "slots_in_use": live.slots_in_use,
                "in_flight": {f"{tenant}:{kind}": n for (tenant, kind), n in sorted(live.in_flight.items())},
            },
            "engine": None
            if live is None
            else {"up": live.engine_up, "restarts": live.engine_restarts, "loaded_models": live.loaded_models},
            "images": None if live is None else {"bytes_saved": live.image_bytes_saved},
            "recent_errors": list(self.recent_errors)[:20],
        }
