"""Models: engine model operations (``ops``: tags, show, create, copy, delete, pull, load, unload), hardware
profiles and the models config (``profiles``), start-up choices and preloading (``lifecycle``), and the
memory manager that unloads idle models (``memory``). May import ``backends``, ``protocol``, ``errors`` and
``settings``; no other feature package (the composition root wires the memory manager to the scheduler).
"""
