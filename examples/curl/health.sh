#!/usr/bin/env bash
# Health (GET /api/v1/health): the service's and the engine's state; 503 while the engine is down.
set -euo pipefail
url="${SHARED_OLLAMA_URL:-http://127.0.0.1:8000}"

curl -sS --fail-with-body "$url/api/v1/health"
echo
