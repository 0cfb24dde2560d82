#!/usr/bin/env bash
# A chat completion in OpenAI's format (POST /v1/chat/completions), as any OpenAI client sends it.
set -euo pipefail
url="${SHARED_OLLAMA_URL:-http://127.0.0.1:8000}"
model="${SHARED_OLLAMA_MODEL:-smollm2:135m}"
project="${SHARED_OLLAMA_PROJECT:-examples}"

curl -sS --fail-with-body "$url/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -H "X-Shared-Ollama-Project: $project" \
  -d @- <<JSON
{
  "model": "$model",
  "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
  "temperature": 0,
  "max_tokens": 16
}
JSON
echo
