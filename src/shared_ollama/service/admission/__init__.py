"""Admission: who is asking, and whether and when their request may reach the engine.

Owns tenants and their keys and limits (``tenants``; managed live by ``tenant_store`` over ``tenant_state``
and ``tenant_db``), the per-tenant in-flight places (``inflight`` in this
process, ``inflight_redis`` shared by replicas), the one fair bounded queue of engine slots (``scheduler``), the
gate that puts them together with a deadline (``gate``; over a stream, ``deadline``), the prompt-size check
(``prompts``) and the request's context (``context``). May import ``observability``, ``models``, ``images``,
``backends``, ``protocol``, ``errors`` and ``settings``; never ``cache`` or ``gateway``.
"""
