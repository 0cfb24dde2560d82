"""HTTP adapters: thin protocol layers over the one pipeline in ``service``.

One module per surface, listed in ``app.py`` busiest first: ``ollama`` (``/api/*`` as Ollama defines it and
``/``), ``openai`` (``/v1/*``), ``anthropic`` (``/v1/messages``), then the service API by topic:
``service_generation``, ``service_vision``, ``service_models`` (``/api/v1/*``), and ``operations`` (health, queue,
cache, metrics, analytics, dashboard); ``blobs`` (Ollama's ``/api/blobs/:digest`` uploads, streamed) comes last.
Shared by them: ``surfaces`` (a request's surface, so its error format, from its path), ``deps`` (gateway,
tenant, request context), ``http`` (bodies in, JSON/NDJSON/SSE out), ``errors`` (error rendering),
``middleware`` (request id and record), ``model_common`` (model management for ``ollama`` and
``service_models``), ``openapi`` (lean routes and body schemas for the docs).
"""
