"""The one settings object. Built once (environment, prefix ``SHARED_OLLAMA_``) and passed down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineMode = Literal["auto", "ollama", "embedded", "external"]


def _default_data_dir() -> Path:
    """``~/.shared-ollama``"""
    return Path.home() / ".shared-ollama"


class Settings(BaseSettings):
    """Every tunable of the gateway and the embedded engine."""

    model_config = SettingsConfigDict(env_prefix="SHARED_OLLAMA_", extra="ignore", frozen=True)

    # --- gateway HTTP server
    host: str = "127.0.0.1"
    """Address the gateway binds; a non-loopback one with no keys configured logs a warning (auth is off)."""
    port: int = Field(default=8000, ge=0, le=65535)
    """Port the gateway binds; ``serve`` binds it before the engine starts, so a port in use fails at once."""
    url: str | None = None
    """Where the ``shared-ollama`` CLI finds the running service (``--url`` overrides); unset: ``http://host:port``
    from the two settings above (a wildcard host as loopback)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of the gateway's JSON logs (``debug`` also makes llama.cpp verbose in the embedded engine)."""
    log_prompts: bool = False
    """Log prompts (at debug level). Off by default: prompts are the tenants' data."""
    access_log: bool = True
    """One JSON line per finished request (at info level)."""
    log_file: bool = True
    """Also write the JSON logs to ``<data_dir>/logs/api.log`` (rotated at 10 MiB, 5 kept)."""
    header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a client has to send a request's head (line and headers); later, ``408`` and the connection closes."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds a client has to send a request's whole body; later, ``408 body_timeout`` and the connection closes."""
    keep_alive_timeout: int = Field(default=75, ge=1)
    """Seconds an idle client connection stays open between requests: longer than common clients keep theirs
    (httpx, behind the ollama, openai and anthropic clients: 5 s; aiohttp: 15 s), so a client never sends a
    request on a connection the server is just closing."""
    analytics_retention_days: float = Field(default=30.0, gt=0)
    """Request analytics (``analytics_path``) older than this are deleted."""
    analytics_path: Path | None = None
    """The analytics store's SQLite file (request log behind ``/api/v1/analytics`` and ``/api/v1/usage``, and the
    audit log); default ``<data_dir>/analytics.sqlite3``. Gateway replicas on one machine may share one file; not
    on a network file system."""
    analytics_stream: str = Field(default="shared-ollama:analytics", min_length=1, max_length=200)
    """With ``redis_url``: the Redis stream through which replicas share their request analytics (each publishes
    its rows and imports the others'). Replicas of one deployment name the same stream; separate deployments on
    one Redis, different ones."""
    analytics_stream_records: int = Field(default=200_000, ge=1000)
    """Requests the analytics stream keeps (about): how much history a new replica imports, and how long a
    replica may be down and still catch up."""
    responses_ttl_seconds: float = Field(default=30 * 86400.0, gt=0)
    """Stored Responses API responses (``<data_dir>/responses.sqlite3``, ``store: true``) are kept this long."""
    audit_retention_days: float = Field(default=365.0, gt=0)
    """Audit log entries (admin actions, in the analytics store) older than this are deleted at start-up."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    """The service's state: model store, logs, analytics, stored responses, agents, tenants added live."""

    # --- engine selection and supervision
    engine: EngineMode = "auto"
    """The engine: ``auto`` (a running Ollama at ``ollama_url``, else an ``ollama`` binary, else the embedded
    engine), ``ollama`` (managed), ``embedded`` (managed, llama.cpp) or ``external`` (``ollama_url``, not managed)."""
    ollama_url: str = "http://127.0.0.1:11434"
    """Where a running Ollama is looked for (auto) or the engine to use (external)."""
    engines_file: Path | None = None
    """A fleet of engine hosts (docs/SCALING.md): a YAML file listing them (``url``, ``kind``, ``slots``, ``models``,
    ``weight``, ``api_key``). The gateway then routes each request to one of those hosts and starts no engine of
    its own (``engine`` and ``ollama_url`` are not used)."""
    engine_urls: str | None = None
    """The simple fleet: comma-separated Ollama-API URLs, each a host with ``engine_slots`` (else
    ``engine_num_parallel``) slots. Ignored when ``engines_file`` is set."""
    ollama_binary: str = "ollama"
    """The executable a managed Ollama is started from (looked up on ``PATH``)."""
    engine_host: str = "127.0.0.1"
    """Address a managed engine (embedded or Ollama) listens on."""
    engine_port: int = Field(default=0, ge=0, le=65535)
    """Port for a managed engine; 0 picks a free loopback port."""
    engine_start_timeout: float = Field(default=60.0, gt=0)
    """Seconds a managed engine has to answer ``GET /api/version`` after it is started; later, it is stopped."""
    engine_restart_backoff: float = Field(default=0.5, gt=0)
    """Seconds before restarting a managed engine that exited; doubled after each restart that fails."""
    engine_restart_backoff_max: float = Field(default=30.0, gt=0)
    """Longest wait between restarts of a managed engine."""
    engine_stop_timeout: float = Field(default=10.0, gt=0)
    """Seconds a managed engine gets to exit after SIGTERM before SIGKILL (and the embedded engine to unload)."""
    engine_health_interval: float = Field(default=2.0, gt=0)
    """Seconds between health probes (``GET /api/version``) of the engine, managed or external."""
    engine_probe_timeout: float = Field(default=2.0, gt=0)
    """Seconds the engine gets to answer a health probe."""
    engine_probe_failures: int = Field(default=2, ge=1)
    """Probes in a row a managed engine leaves unanswered before it counts as stalled: health ``degraded`` and
    requests refused at once with ``503 backend_unavailable`` until it answers again."""

    # --- engine client
    engine_connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds the gateway has to open a connection to the engine."""
    engine_request_timeout: float = Field(default=300.0, gt=0)
    """Seconds the engine may stay silent on a call (between two reads) before the gateway gives the call up."""
    engine_max_connections: int = Field(default=256, ge=1)
    """Connections the gateway's pool holds open to the engine at most."""

    # --- embedded engine
    models_dir: Path | None = None
    """Model store of the embedded engine; default ``<data_dir>/models``."""
    engine_max_loaded_models: int = Field(default=3, ge=1)
    """Models the embedded engine holds loaded at once; loading another unloads the least recently used idle one."""
    engine_num_parallel: int = Field(default=4, ge=1)
    """Slots per model in the embedded engine: sequences llama.cpp decodes at once."""
    engine_num_ctx: int = Field(default=4096, ge=256)
    """Context (tokens) per slot of a model the embedded engine loads, unless the model or the call sets ``num_ctx``."""
    engine_threads: int = Field(default=0, ge=0)
    """CPU threads per model; 0 splits the physical cores among the models loaded at once (engine/machine.py)."""
    engine_cache_ram_mib: int | None = Field(default=None, ge=-1)
    """Bound of llama.cpp's prompt cache per model in MiB; unset: 5 % of the RAM, at most 1024; 0 off, -1 unbounded."""
    max_blob_bytes: int = Field(default=137_438_953_472, ge=1)
    """Largest blob (a model, projector or adapter file) ``POST /api/blobs/sha256:<hex>`` accepts: larger is a 413."""
    modelfile_dir: Path | None = None
    """Relative file paths of a Modelfile sent to ``/api/v1/models/create`` (``FROM ./model.gguf``, ``ADAPTER
    ./lora.gguf``, files on the gateway's machine) are resolved against this directory; unset: the working one."""
    engine_token: str | None = Field(default=None, repr=False)
    """Bearer token the embedded engine requires on every request; set by the gateway for the engine it starts."""
    engine_keep_alive: str = "5m"
    """How long a model stays loaded after its last use when a request names no ``keep_alive``."""

    # --- pulling models into the embedded engine (docs/MODELS.md, "Getting models")
    registry_url: str = "https://registry.ollama.ai"
    """Ollama's registry, for plain names (``qwen3:0.6b``, ``library/...``); ``host/ns/model`` names go to ``host``."""
    hf_endpoint: str | None = None
    """Hugging Face endpoint (a mirror) for ``hf.co/...`` names; unset: huggingface_hub's default (``HF_ENDPOINT``)."""
    hf_token: str | None = Field(default=None, repr=False)
    """Hugging Face token for gated or private repos; unset: huggingface_hub's own lookup (``HF_TOKEN``, its login)."""
    min_free_disk_bytes: int = Field(default=1 << 30, ge=0)
    """A pull that would leave less free space than this on the store's disk is refused before downloading."""

    # --- models
    default_model: str = "smollm2:135m"
    """Model of a service API request (``/api/v1/chat``, ``/generate``, ``/vlm`` ...) that names none."""
    default_embedding_model: str = "all-minilm"
    """Model of an embeddings request that names none."""
    default_vision_model: str | None = None
    """Used by ``/api/v1/vlm`` when a request names no model (no offline default can see)."""

    # --- model lifecycle, memory, profiles
    models_config: Path | None = None
    """Hardware profiles, aliases and per-model settings (YAML); default ``config/models.yaml`` when present."""
    profile: str | None = None
    """Force a profile from the models config instead of choosing by hardware."""
    preload_models: bool = False
    """Load the active profile's ``preload`` models at start-up."""
    memory_check_interval: float = Field(default=60.0, gt=0)
    """Seconds between the memory manager's checks (idle models, system memory)."""
    idle_unload_seconds: float = Field(default=300.0, gt=0)
    """Unload a model the gateway has not used for this long (per-model overrides in the models config)."""
    memory_high_percent: float = Field(default=85.0, gt=0, le=100)
    """Unload least-recently-used models while system memory use is above this."""

    # --- tenants and auth
    tenants_file: Path | None = None
    """Tenants, keys and per-tenant limits (YAML); default ``config/tenants.yaml`` when it exists."""
    api_keys: str = ""
    """More tenants from the environment: ``tenant:key[:role],...`` (role ``user`` or ``admin``)."""
    project_header: str = "X-Shared-Ollama-Project"
    """With auth off, the tenant is this header's value (else ``default``)."""

    # --- engine-level tenant policy (per-tenant overrides in the tenants file's ``policy``)
    policy_exempt_admin: bool = True
    """Admin keys are exempt from the engine-level policy below (with auth off no tenant is: none has a key)."""
    max_keep_alive_seconds: float = Field(default=0.0, ge=0)
    """Longest ``keep_alive`` a tenant may ask (longer or negative ones are clamped); 0: the model's idle timeout."""
    default_max_output_tokens: int = Field(default=1024, ge=1)
    """Output cap (``num_predict``) for a generation that sets none (per model in the models config)."""
    max_output_tokens: int = Field(default=0, ge=0)
    """Largest output a tenant may ask; 0: no ceiling. Larger (or unbounded) requests are clamped or refused."""
    output_over_ceiling: Literal["clamp", "refuse"] = "clamp"
    """What a request above the output ceiling gets: clamped (and told in a header), or a 400."""

    # --- admission: caps, queue, deadlines, limits (per-tenant overrides in the tenants file)
    max_inflight_text: int = Field(default=6, ge=1)
    """Text requests one tenant may have in flight (waiting or running); beyond, ``429 tenant_busy``."""
    max_inflight_vision: int = Field(default=3, ge=1)
    """Vision requests one tenant may have in flight (waiting or running); beyond, ``429 tenant_busy``."""
    max_inflight_per_user: int = Field(default=0, ge=0)
    """In-flight requests per end user inside a tenant (``X-Shared-Ollama-User`` ...); 0: no per-user cap."""
    engine_slots: int = Field(default=0, ge=0)
    """Requests sent to the engine at once; 0 derives it from the engine's parallel slots."""
    max_queue: int = Field(default=128, ge=0)
    """Requests waiting for an engine slot, every tenant together; beyond, ``503 queue_full``."""
    queue_timeout_text: float = Field(default=120.0, gt=0)
    """Seconds a text request may take, waiting and running; past it, ``503 request_timeout``."""
    queue_timeout_vision: float = Field(default=150.0, gt=0)
    """Seconds a vision request may take, waiting and running; past it, ``503 request_timeout``."""
    max_body_bytes: int = Field(default=1_572_864, ge=1024)
    """Largest request body outside the vision endpoints; larger is ``413 request_too_large``."""
    max_vision_body_bytes: int = Field(default=25_165_824, ge=1024)
    """Body limit of the vision endpoints (``/api/v1/vlm``, ``/vlm/openai``, ``/batch/vlm``): camera photos
    are several MiB before the image pipeline shrinks them."""
    max_prompt_tokens: int = Field(default=4096, ge=1)
    """Longest prompt in tokens (the model's tokenizer counts); longer is ``400 prompt_too_large``."""
    prompt_count_timeout: float = Field(default=2.0, gt=0)
    """Seconds the engine's tokenizer gets to count a long prompt before admission; past it, the estimate decides."""
    model_aging_seconds: float = Field(default=15.0, ge=0)
    """How long a request for a model that is not loaded may be passed over for requests that are."""
    batch_aging_seconds: float = Field(default=60.0, ge=0)
    """How long a batch request may be passed over for interactive ones before it competes as their equal."""
    warm_models: int = Field(default=0, ge=0)
    """Models the engine holds at once, for scheduling; 0 means ``engine_max_loaded_models``."""

    # --- quotas per tenant (per-tenant overrides in the tenants file's ``limits``; unset or 0: unlimited)
    requests_per_minute: int | None = Field(default=None, ge=0)
    """Requests a tenant may send per minute (rolling window; cache hits count): over it, ``429 rate_limited``."""
    tokens_per_minute: int | None = Field(default=None, ge=0)
    """Prompt + completion tokens a tenant may use per minute (rolling; reserved from an estimate, then settled
    with the engine's counts)."""
    tokens_per_day: int | None = Field(default=None, ge=0)
    """Prompt + completion tokens a tenant may use per rolling 24 hours."""

    # --- images (vision requests)
    image_max_side: int = Field(default=1536, ge=64)
    """Images are downscaled so their longest side is at most this many pixels."""
    image_jpeg_quality: int = Field(default=85, ge=30, le=100)
    """JPEG quality of re-encoded images."""
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    """Images declaring more pixels are refused before decoding (decompression bombs)."""
    image_max_count: int = Field(default=8, ge=1)
    """Images per request."""
    image_workers: int = Field(default=2, ge=1)
    """Threads that decode, shrink and re-encode images."""
    image_cache_entries: int = Field(default=64, ge=0)
    """Processed images kept so a repeated image is not processed again; 0: none kept."""
    allow_remote_images: bool = False
    """Fetch http(s) image URLs (off: a gateway that fetches arbitrary URLs is an SSRF hole)."""
    remote_image_timeout: float = Field(default=10.0, gt=0)
    """Seconds one remote image fetch may take (with ``allow_remote_images``)."""

    # --- batches
    batch_max_items: int = Field(default=100, ge=1)
    """Requests one batch call (``/api/v1/batch/chat``, ``/batch/vlm``) may hold."""
    batch_concurrency: int = Field(default=4, ge=1)
    """Items of one batch running at once (never more than the tenant's in-flight cap)."""

    # --- response cache
    cache_enabled: bool = True
    """The response cache (docs/CACHE.md); off: every request goes to the engine."""
    cache_ttl_seconds: float = Field(default=3600.0, gt=0)
    """How long a cached response is served."""
    cache_max_entries: int = Field(default=10_000, ge=1)
    """Cached responses kept at most (the least recently used go first)."""
    cache_max_bytes: int = Field(default=256 * 2**20, ge=1024)
    """Bytes of cached responses kept at most (the least recently used go first)."""
    cache_scope: Literal["tenant", "shared"] = "tenant"
    """``tenant``: a tenant's entries are invisible to the others; ``shared``: everyone shares answers."""
    cache_semantic_threshold: float = Field(default=0.95, gt=0, le=1)
    """Cosine similarity a semantic match needs (semantic matching is opt-in per request)."""
    cache_semantic_max_messages: int = Field(default=8, ge=1)
    """Conversations with more messages than this are not matched semantically."""
    cache_embed_timeout: float = Field(default=2.0, gt=0)
    """Seconds the semantic cache's embedding call may take; past it, the request goes to the engine."""
    cache_embedding_model: str = "all-minilm"
    """The embedding model of the semantic cache."""

    # --- agents (service/agents)
    agent_run_timeout_seconds: float = Field(default=300.0, gt=0)
    """An agent run's whole deadline (every step and tool call); past it the run stops with ``deadline``."""
    agent_max_steps_limit: int = Field(default=32, ge=1)
    """The largest ``max_steps`` an agent or a run may ask for."""
    agent_session_max_messages: int = Field(default=40, ge=2)
    """A session's run sees (and stores) at most this many of its latest messages, from a user turn on."""
    agent_tool_timeout_seconds: float = Field(default=30.0, gt=0)
    """Seconds one tool call may take; later it becomes a tool error the model sees."""
    agent_tool_result_max_chars: int = Field(default=4000, ge=100)
    """A tool's result is cut to this many characters before it goes back to the model."""
    agent_http_allow_hosts: str = ""
    """The ``http_get`` tool's allowed hosts (``host``, ``host:port``, ``*.domain[:port]``, comma-separated); empty:
    the tool is off. Private, loopback and link-local addresses are refused unless their host is listed by name
    (not only through ``*.domain``)."""
    agent_http_max_bytes: int = Field(default=1_000_000, ge=1)
    """Largest body ``http_get`` reads (a longer one is cut and says so)."""
    agent_http_timeout_seconds: float = Field(default=10.0, gt=0)
    """Seconds one ``http_get`` call may take in all (every redirect and the body)."""
    mcp_config: Path | None = None
    """MCP servers whose tools agents may use (YAML); default ``config/mcp.yaml`` when it exists."""
    agent_embedding_model: str | None = None
    """The embedding model of agents' documents (``search_documents``); default ``default_embedding_model``."""

    # --- POML templates on /api/v1/chat (service/poml)
    poml_mode: Literal["isolated", "trusted", "off"] = "isolated"
    """How ``poml`` templates (which run JavaScript) are rendered: ``isolated`` in a sandboxed Node.js process with
    no network (Linux user namespaces; a host without them refuses templates), ``trusted`` sandboxed but with the
    network (only when every tenant is trusted), ``off`` refused."""
    poml_timeout_seconds: float = Field(default=15.0, gt=0)
    """Seconds a template may take to render (a 400 names ``poml``), and may wait for a free renderer (a 503)."""
    poml_max_template_bytes: int = Field(default=65536, ge=1)
    """Largest ``poml`` template accepted (bytes of UTF-8)."""
    poml_concurrency: int = Field(default=1, ge=1)
    """Templates rendered at once; each is a Node.js process of about 1.5 s of CPU and 250 MB."""

    # --- metrics: bounded label sets
    metrics_max_tenants: int = Field(default=100, ge=1)
    """Tenants with labels of their own in the metrics and the per-tenant counters (configured tenants always
    have theirs); later ones are counted as ``other``."""
    metrics_max_models: int = Field(default=100, ge=1)
    """Models with labels of their own in the metrics and the performance window (a model gets one once the
    engine has answered a request for it); later ones are counted as ``other``, names the engine does not know as
    ``unknown``."""

    # --- shared state across gateway replicas
    redis_url: str | None = None
    """Redis shared by gateway replicas (``redis://...``): in-flight places, quotas, the response cache, tenants
    and keys; unset: this process alone."""
    redis_lease_seconds: float = Field(default=30.0, gt=1)
    """A replica's hold on a tenant's in-flight place expires this long after its last refresh."""

    @field_validator("ollama_url", "registry_url", "hf_endpoint")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @property
    def store_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def slots(self) -> int:
        """Engine slots the gateway fills at once."""
        return self.engine_slots or self.engine_num_parallel

    @property
    def scheduling_capacity(self) -> int:
        """Models the engine can hold loaded at once, as the scheduler assumes."""
        return self.warm_models or self.engine_max_loaded_models

    @property
    def threads(self) -> int:
        return self.engine_threads or os.cpu_count() or 1

    def public_dict(self) -> dict[str, object]:
        """Settings as shown by ``shared-ollama config show``, with keys and passwords masked."""
        data = self.model_dump(mode="json")
        for secret in ("api_keys", "engine_token", "hf_token"):
            if data.get(secret):
                data[secret] = "***"
        url = str(data.get("redis_url") or "")
        if "@" in url:
            scheme, sep, rest = url.rpartition("://") if "://" in url.split("@")[0] else ("", "", url)
            data["redis_url"] = f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
        return data
