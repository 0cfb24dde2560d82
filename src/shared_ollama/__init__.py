"""Shared Ollama Service: one local LLM service shared by many projects."""

__version__ = "0.1.0"
