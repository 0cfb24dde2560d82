"""The engine client and the engine process supervisor."""
