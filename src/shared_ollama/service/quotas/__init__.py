"""Quotas: per-tenant budgets of requests per minute, tokens per minute and tokens per day.

Owns the budgets' arithmetic (``buckets``: rolling windows kept as buckets that refill continuously over their
window, and the in-process store), the store shared by gateway replicas through Redis (``redis_buckets``), and
``Quotas`` (``quotas``): the reservation a request takes before the cache and the engine, its settlement from the
engine's own token counts once the call ends, the ``rate_limited`` refusal and the rate-limit headers. May import
``admission`` (the request's context and its tenant's limits), ``observability`` (the request's record),
``errors`` and ``settings``; never ``cache`` or ``gateway``.
"""
