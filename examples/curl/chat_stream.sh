#!/usr/bin/env bash
# Streamed chat (POST /api/v1/chat with "stream": true): one JSON object per line (NDJSON) as tokens arrive,
# the last one with "done": true and the counts.
set -euo pipefail
url="${SHARED_OLLAMA_URL:-http://127.0.0.1:8000}"
model="${SHARED_OLLAMA_MODEL:-smollm2:135m}"
project="${SHARED_OLLAMA_PROJECT:-examples}"

curl -sS --fail-with-body --no-buffer "$url/api/v1/chat" \
  -H 'Content-Type: application/json' \
  -H "X-Shared-Ollama-Project: $project" \
  -d @- <<JSON
{
  "model": "$model",
  "messages": [{"role": "user", "content": "Describe the sky in one sentence."}],
  "stream": true,
  "options": {"temperature": 0, "num_predict": 16}
}
JSON
