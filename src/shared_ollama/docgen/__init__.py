"""The generated documents: ``docs/API_REFERENCE.md`` from the OpenAPI schema and ``docs/CONFIGURATION.md`` from
the settings object.

``generate.py`` renders both in memory (``scripts/dev/gen_docs.py`` writes them; a unit test compares them with the
files). It sits at the top of the import graph, beside ``cli.py``: it builds the app (without starting it) to read
its schema. Nothing in the service imports it.
"""
