"""The response cache: keys and policy (pure), memory and Redis stores, stream replay, and the pipeline's use.

``keys`` hashes what can change an answer, ``policy`` decides the mode, ``memory_store`` and ``redis_store``
keep entries and vectors, ``replay`` turns a stored answer into a stream and back, ``response`` is the cache
itself and ``caching`` is how the gateway uses it (digests, headers, the semantic embedder). May import
``admission`` (and what it may), ``backends``, ``protocol``, ``errors``; never ``gateway``.
"""
