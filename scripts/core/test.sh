#!/usr/bin/env bash
# Install the dev extras, prepare the models, lint, and run the whole suite (end-to-end tests with the
# real embedded engine included). Arguments, when given, are pytest's and replace the default selection.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv dev
install_models
ensure_redis_server
ensure_chromium
ensure_example_toolchains
log "lint"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
if [ -d clients/python/src ]; then
  "$VENV/bin/mypy" --strict clients/python/src
fi
log "tests"
mkdir -p artifacts
if [ "$#" -gt 0 ]; then
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
fi
# Unit and integration tests on two workers (pytest-xdist); then the end-to-end and reliability tests one at a time:
# two real engines generating at once on this kind of machine only slow each other down.
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n 2 --durations=10 tests/unit tests/integration
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 tests/e2e tests/reliability
