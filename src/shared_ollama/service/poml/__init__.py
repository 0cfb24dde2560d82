"""POML templates of ``/api/v1/chat``, rendered to messages by the ``poml`` package's Node.js renderer.

``renderer.py`` runs one sandboxed Node.js process per template (``guard.cjs`` is loaded into each), bounded in
time, memory, output and number at once; the request fields and the rendered result are ``protocol/poml.py``'s.
May import ``errors``, ``settings`` and ``protocol``; no other feature package.
"""
