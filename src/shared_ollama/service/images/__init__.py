"""Images: decoding, checking and re-encoding them (``codec``), the bounded worker pool and URL/base64 handling
(``pipeline``), and the vision capability of models plus per-request compression (``vision``). May import
``backends``, ``protocol``, ``errors`` and ``settings``; no other feature package.
"""
