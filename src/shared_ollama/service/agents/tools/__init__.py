"""The agents' built-in tools: ``calculator``, ``current_time``, ``http_get`` (off unless hosts are allowed) and
``search_documents``, served by ``builtin.BuiltinTools`` (a ``ToolProvider``). Imports ``..tooling``,
``shared_ollama.settings`` and the standard library, aiohttp, yarl; nothing else of the service."""
