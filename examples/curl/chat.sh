#!/usr/bin/env bash
# Chat in the service's native format (POST /api/v1/chat): one JSON answer, not streamed.
set -euo pipefail
url="${SHARED_OLLAMA_URL:-http://127.0.0.1:8000}"
model="${SHARED_OLLAMA_MODEL:-smollm2:135m}"
project="${SHARED_OLLAMA_PROJECT:-examples}"

curl -sS --fail-with-body "$url/api/v1/chat" \
  -H 'Content-Type: application/json' \
  -H "X-Shared-Ollama-Project: $project" \
  -d @- <<JSON
{
  "model": "$model",
  "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
  "options": {"temperature": 0, "num_predict": 16}
}
JSON
echo
