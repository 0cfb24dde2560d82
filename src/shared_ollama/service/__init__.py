"""The pipeline: no web framework here. ``gateway`` is the one path every surface takes to the engine;
``batch`` runs several prepared requests through it. Each feature is a package whose ``__init__`` says what it
owns and what it may import; they import each other only downwards (cache -> admission -> observability,
models, images) and none imports ``gateway``.
"""
