"""Observability: the per-request record (``records``), Prometheus metrics (``metrics``), the in-memory
performance window (``perf``), SQLite analytics (``analytics``) and the usage read from it (``usage``), the
audit log of admin actions (``audit``), the bounded model and tenant label values (``labels``),
``telemetry``, which sends each finished record to all three, and the SQLite plumbing every store shares
(``sqlite_db``: opening a file; ``sqlite_worker``: one connection in one thread of its own). May import
``errors`` and ``settings``; no other feature package.
"""
