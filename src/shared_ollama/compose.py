"""Building the service's long-lived objects, in dependency order, each complete before anything uses it.

``build`` starts every part through one ``AsyncExitStack``: each part's stop is pushed before (or as) the part
starts, so a failure at any step of start-up (a bad models config, an unknown profile, an unwritable analytics
store) unwinds everything already running, the engine process included, and shutdown runs every stop even
when one of them raises. This is the only place that wires feature packages to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from shared_ollama.backends.client import EngineApi, EngineClient
from shared_ollama.backends.head_start import HeadStart
from shared_ollama.backends.supervisor import EngineSupervisor
from shared_ollama.service.admission.engine_policy import EnginePolicy, ModelUsers
from shared_ollama.service.admission.gate import Admission
from shared_ollama.service.admission.inflight import InflightCounter, LocalInflight
from shared_ollama.service.admission.scheduler import Scheduler
from shared_ollama.service.admission.tenant_store import TenantStore
from shared_ollama.service.admission.tenants import DEFAULT_TENANT, Tenants
from shared_ollama.service.agents.agents import Agents
from shared_ollama.service.agents.documents import Documents
from shared_ollama.service.agents.mcp_config import McpConfig, load_mcp_config, resolve_mcp_path
from shared_ollama.service.agents.metrics import AgentMetrics
from shared_ollama.service.agents.store import AgentStore
from shared_ollama.service.agents.toolbox import ToolBox
from shared_ollama.service.agents.tooling import ToolProvider
from shared_ollama.service.agents.tools.builtin import BuiltinTools
from shared_ollama.service.cache.caching import Caching, engine_embedder
from shared_ollama.service.cache.response import CacheConfig, ResponseCache, make_store
from shared_ollama.service.fleet.fleet import Fleet, FleetEngines
from shared_ollama.service.gateway import Gateway
from shared_ollama.service.images.pipeline import ImageProcessor
from shared_ollama.service.images.vision import Vision
from shared_ollama.service.models.lifecycle import choose_profile, preload
from shared_ollama.service.models.loaded import LoadedModels
from shared_ollama.service.models.memory import MemoryManager
from shared_ollama.service.models.ops import ModelOps
from shared_ollama.service.models.policy import ModelPolicy, limits_in_force
from shared_ollama.service.observability.analytics import AnalyticsStore
from shared_ollama.service.observability.analytics_share import AnalyticsShare
from shared_ollama.service.observability.audit import AuditLog
from shared_ollama.service.observability.labels import RecordLabels
from shared_ollama.service.observability.telemetry import Telemetry
from shared_ollama.service.poml.renderer import PomlRenderer
from shared_ollama.service.quotas.buckets import LocalBuckets
from shared_ollama.service.quotas.quotas import Quotas
from shared_ollama.service.responses.store import ResponseStore
from shared_ollama.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    gateway: Gateway
    telemetry: Telemetry
    tenant_store: TenantStore
    responses: ResponseStore
    agents: Agents
    poml: PomlRenderer


async def _agents(
    settings: Settings, gateway: Gateway, tenants: Tenants, telemetry: Telemetry, stack: AsyncExitStack
) -> Agents:
    """The agents: their store (``<data_dir>/agents.sqlite3``) and documents (``agents_vectors.sqlite3``), the
    built-in tools and the MCP servers (started in the background: a server that cannot start is shown down,
    never blocks start-up). Without MCP servers the mcp SDK (about a second of imports) is never loaded."""
    store = AgentStore(settings.data_dir / "agents.sqlite3", retention_days=settings.analytics_retention_days)
    stack.push_async_callback(store.close)
    await store.start()
    documents = Documents(settings.data_dir / "agents_vectors.sqlite3")  # its own file: another SQLite library
    stack.push_async_callback(documents.close)
    await documents.start()
    path = resolve_mcp_path(settings.mcp_config, Path.cwd())
    config = load_mcp_config(path) if path is not None else McpConfig()

    def is_admin(tenant: str) -> bool:
        """As everywhere: with auth off every tenant is an admin."""
        return not tenants.auth_enabled or (tenant in tenants.names() and tenants.get(tenant).is_admin)

    builtin = BuiltinTools.from_settings(settings)
    metrics = AgentMetrics(telemetry.metrics, max_tenants=settings.metrics_max_tenants)

    def toolbox(providers: list[ToolProvider]) -> ToolBox:
        timeout, max_chars = settings.agent_tool_timeout_seconds, settings.agent_tool_result_max_chars
        return ToolBox(providers, timeout=timeout, max_chars=max_chars)

    if not config.servers:
        return Agents(gateway, store, documents, toolbox([builtin]), metrics)
    from shared_ollama.service.agents.mcp_tools import McpTools

    mcp = McpTools(
        config,
        is_admin=is_admin,
        default_timeout=settings.agent_tool_timeout_seconds,
        log_dir=settings.data_dir / "logs",
    )
    stack.push_async_callback(mcp.close)
    await mcp.start()
    return Agents(gateway, store, documents, toolbox([builtin, mcp]), metrics, mcp_status=mcp.status)


def _counter(settings: Settings) -> InflightCounter:
    if settings.redis_url:
        from shared_ollama.service.admission.inflight_redis import RedisInflight

        return RedisInflight(settings.redis_url, settings.redis_lease_seconds)
    return LocalInflight()


def _quotas(settings: Settings) -> Quotas:
    if settings.redis_url:
        from shared_ollama.service.quotas.redis_buckets import RedisBuckets

        return Quotas(RedisBuckets(settings.redis_url))
    return Quotas(LocalBuckets())


def _cache(settings: Settings, client: EngineApi) -> ResponseCache:
    config = CacheConfig(
        enabled=settings.cache_enabled,
        ttl_seconds=settings.cache_ttl_seconds,
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
        scope=settings.cache_scope,
        semantic_threshold=settings.cache_semantic_threshold,
        semantic_max_messages=settings.cache_semantic_max_messages,
        embed_timeout=settings.cache_embed_timeout,
        redis_url=settings.redis_url,
    )
    return ResponseCache(config, make_store(config), engine_embedder(client, settings.cache_embedding_model))


def _analytics_share(settings: Settings) -> AnalyticsShare | None:
    """With Redis, replicas share their analytics through a stream (replicas on one machine may share a file too)."""
    if not settings.redis_url:
        return None
    return AnalyticsShare(
        settings.redis_url, stream=settings.analytics_stream, max_records=settings.analytics_stream_records
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def build(
    settings: Settings, tenants: Tenants, stack: AsyncExitStack, head_start: HeadStart | None = None
) -> Services:
    """Start every part (its stop goes on ``stack``) and return the complete gateway and telemetry; the engine
    ``serve`` started ahead of the app (``head_start``) is adopted rather than started again."""
    counter = _counter(settings)
    stack.push_async_callback(counter.close)
    await counter.start()
    quotas = _quotas(settings)
    stack.push_async_callback(quotas.close)
    fleet = Fleet.from_settings(settings)  # engine hosts configured: route to them, start no engine here
    supervisor: EngineSupervisor | FleetEngines
    client: EngineApi
    if fleet is not None:
        supervisor = FleetEngines(fleet)
        stack.push_async_callback(fleet.stop)
        await fleet.start()
        client = fleet.client
    else:
        supervisor = EngineSupervisor(settings, head_start)
        stack.push_async_callback(supervisor.stop)  # before start: an engine started by a failing start is stopped
        await supervisor.start()
        client = EngineClient(
            supervisor.base_url, settings, is_available=supervisor.is_available, token=lambda: supervisor.token
        )
        stack.push_async_callback(client.close)
        await client.open()

    images = ImageProcessor(settings)
    stack.callback(images.close, wait=False)
    vision = Vision(client, images)
    analytics_path = settings.analytics_path or settings.data_dir / "analytics.sqlite3"  # replicas may share it
    analytics = AnalyticsStore(
        analytics_path, retention_days=settings.analytics_retention_days, share=_analytics_share(settings)
    )
    stack.push_async_callback(analytics.close)
    await analytics.start()
    responses = ResponseStore(settings.data_dir / "responses.sqlite3", ttl_seconds=settings.responses_ttl_seconds)
    stack.push_async_callback(responses.close)
    await responses.start()
    cache = _cache(settings, client)
    stack.push_async_callback(cache.close)
    caching = Caching(cache, client)

    plan = supervisor.plan
    can_pull = fleet is not None or (plan is not None and plan.kind != "embedded")
    selection = await choose_profile(settings, lambda: client.request_json("GET", "/api/tags"), can_pull=can_pull)
    own_engine = plan is not None and plan.kind == "embedded" and plan.managed
    limits = limits_in_force(settings, selection, engine_parallel=settings.engine_num_parallel if own_engine else None)
    policy = ModelPolicy(selection, limits)

    def model_changed(model: str) -> None:
        """A model was created, copied, deleted or pulled: what is remembered about models is stale."""
        vision.forget(model)
        caching.forget(model)

    models = ModelOps(client, settings.engine_keep_alive, on_change=model_changed, pinned=policy.pinned)
    loaded = LoadedModels(client)
    scheduler = Scheduler(
        limits.slots,
        settings.max_queue,
        model_capacity=limits.max_loaded_models,
        model_aging=settings.model_aging_seconds,
        batch_aging=settings.batch_aging_seconds,
        hosts=fleet.placement_hosts() if fleet is not None else None,
    )
    if fleet is not None:
        fleet.on_change = scheduler.poke  # a host back, or its loaded models known: start what waits for it
    memory = MemoryManager(
        loaded=loaded.refresh,
        unload=models.unload,
        busy=scheduler.busy_models,
        idle_timeout=policy.idle_timeout,
        interval=settings.memory_check_interval,
        # This machine's memory is not the fleet's hosts': with a fleet, only idle timeouts unload models.
        high_percent=settings.memory_high_percent if fleet is None else 100.0,
        max_loaded=limits.max_loaded_models if fleet is None else None,  # each host keeps its own limit
    )
    gateway = Gateway(
        settings,
        client,
        supervisor,
        tenants,
        Admission(scheduler, counter),
        vision,
        models=models,
        policy=policy,
        loaded=loaded,
        memory=memory,
        caching=caching,
        quotas=quotas,
        engine_policy=EnginePolicy(
            policy,
            ModelUsers(),
            engine_num_ctx=settings.engine_num_ctx,
            default_output=settings.default_max_output_tokens,
        ),
        fleet=fleet,
    )
    labels = RecordLabels(
        max_models=settings.metrics_max_models,
        max_tenants=settings.metrics_max_tenants,
        tenants=[*tenants.names(), DEFAULT_TENANT],
    )
    telemetry = Telemetry(analytics, gateway.live_state, labels=labels, access_log=settings.access_log)
    audit = AuditLog(analytics_path, retention_days=settings.audit_retention_days)
    await audit.start()
    tenant_store = TenantStore(settings, tenants, audit, on_change=labels.keep_tenants)
    stack.push_async_callback(tenant_store.close)
    await tenant_store.start()  # the admin API's kept changes apply before the first request
    stack.callback(tenant_store.watch_sighup())
    stack.push_async_callback(memory.close)
    memory.start()
    if settings.preload_models and selection is not None:
        warm_up = asyncio.create_task(preload(models, selection), name="preload")
        stack.push_async_callback(_cancel, warm_up)
    agents = await _agents(settings, gateway, tenants, telemetry, stack)
    poml = PomlRenderer(settings)
    await poml.start()
    return Services(gateway, telemetry, tenant_store=tenant_store, responses=responses, agents=agents, poml=poml)
