"""The embedded engine: an Ollama-API server on llama.cpp (xllamacpp), run as its own process."""
