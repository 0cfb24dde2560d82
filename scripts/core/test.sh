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
  exec "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider --durations=15 "$@"
fi
# Every test without the real engine (unit, integration, the scripted-engine reliability tests) on two workers
# (pytest-xdist); then the tests with the real engine (marker e2e) one at a time: two real engines generating at
# once on this kind of machine only slow each other down.
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider -n 2 --durations=10 -m "not e2e" tests/unit tests/integration tests/reliability
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider --durations=15 -m e2e tests/e2e tests/reliability
