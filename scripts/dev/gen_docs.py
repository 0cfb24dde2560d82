"""Write the generated documents: docs/API_REFERENCE.md (the OpenAPI schema) and docs/CONFIGURATION.md (the settings).

Run from the repository's root after changing a route, a request model or a setting:

    .venv/bin/python scripts/dev/gen_docs.py           # rewrite what changed
    .venv/bin/python scripts/dev/gen_docs.py --check   # exit 1 when a document is stale

tests/unit/test_docs_generated.py fails while either document is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from shared_ollama.docgen.generate import main

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    sys.exit(main(["--root", str(root), *sys.argv[1:]]))
