"""Stored responses of the OpenAI Responses API (``store``): per tenant, in SQLite in the data directory, kept for
``responses_ttl_seconds``. ``store`` keeps each response's object, input items and the native conversation that
``previous_response_id`` continues. May import ``errors`` and ``settings``; no other feature package.
"""
