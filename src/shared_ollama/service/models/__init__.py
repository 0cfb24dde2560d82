"""Models: engine model operations (``ops``: tags, show, create, copy, delete, pull, load, unload), hardware
profiles and the models config (``profiles``), the limits and per-model settings in force (``policy``), the
engine's loaded models (``loaded``), start-up choices and preloading (``lifecycle``), and the memory manager
that unloads idle models and keeps to the limit of loaded models (``memory``). May import ``backends``,
``protocol``, ``errors`` and ``settings``; no other feature package (the composition root wires the memory
manager to the scheduler).
"""
