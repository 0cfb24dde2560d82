"""HTTP adapters: thin protocol layers over the one pipeline in ``service``."""
