"""Pulling real models into the embedded engine's store: Hugging Face GGUF repositories and Ollama's registry.

- ``names.py``: which source a pulled name comes from, and its parts (pure);
- ``hf_files.py``: which files of a Hugging Face repository make the model (quantisation, splits, projector; pure);
- ``gguf_header.py``: a GGUF's architecture from the first bytes of the file, and the ones llama.cpp loads (pure);
- ``progress.py``: progress lines in Ollama's shape and how often a growing download reports (pure);
- ``download.py``: resumable downloads into partial files, hashed as they are written, verified, then moved in;
- ``hf.py``: the Hugging Face source, through ``huggingface_hub``;
- ``registry.py``: Ollama registry manifests mapped into the store (pure); ``registry_client.py``: its HTTP side;
- ``install.py``: a pulled model's store entry;
- ``jobs.py``: one running pull per name, shared by every client asking for it, cancelled when all have left;
- ``service.py``: ``/api/pull`` for names that are not the offline defaults.

Imports ``engine.store``, ``engine.handlers`` (the HTTP reply), ``protocol``, ``settings``, ``errors`` and ``web``;
``huggingface_hub`` and ``aiohttp`` speak to the sources.
"""
