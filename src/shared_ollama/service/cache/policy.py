"""Cache policy (pure): whether and how a request uses the cache.

An explicit mode (header ``X-Shared-Ollama-Cache``, else the body's ``cache``) wins; otherwise only deterministic
requests are cached (``temperature`` 0, or a ``seed`` >= 0 at any temperature). ``semantic`` also answers a
request whose last user message is close enough (cosine of embeddings >= the threshold) to a cached one with the
same context key.
"""

from __future__ import annotations

from typing import Any

from shared_ollama.errors import InvalidRequest

JsonDict = dict[str, Any]
CACHE_HEADER = "X-Shared-Ollama-Cache"
MODES = ("off", "exact", "semantic")


def _mode(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    mode = value.strip().lower() if isinstance(value, str) else None
    if mode not in MODES:
        raise InvalidRequest(f"{where} must be one of {', '.join(MODES)}, not {value!r}", param="cache")
    return mode


def decide(request: JsonDict, header_mode: str | None, body_mode: str | None) -> str:
    """``off``, ``exact`` or ``semantic``: the explicit mode (the header first, then the body's ``cache``),
    else ``exact`` for a deterministic request (temperature 0, or a seed >= 0), else ``off``."""
    header = _mode(header_mode, f"the {CACHE_HEADER} header")
    body = _mode(body_mode, "cache")
    if header or body:
        return str(header or body)
    options = request.get("options")
    if not isinstance(options, dict):
        return "off"
    seed, temperature = options.get("seed"), options.get("temperature")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return "exact"
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0:
        return "exact"
    return "off"
