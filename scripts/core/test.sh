#!/usr/bin/env bash
# Install the dev extras, prepare the models, lint, and run the whole suite (end-to-end tests with the
# real embedded engine included). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv dev
install_models
ensure_redis_server
ensure_chromium
log "lint"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
log "tests"
mkdir -p artifacts
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
