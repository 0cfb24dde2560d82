#!/usr/bin/env bash
# Embeddings (POST /api/v1/embeddings): one vector per input text, from the embedding model
# (SHARED_OLLAMA_EMBED_MODEL, default all-minilm).
set -euo pipefail
url="${SHARED_OLLAMA_URL:-http://127.0.0.1:8000}"
model="${SHARED_OLLAMA_EMBED_MODEL:-all-minilm}"
project="${SHARED_OLLAMA_PROJECT:-examples}"

curl -sS --fail-with-body "$url/api/v1/embeddings" \
  -H 'Content-Type: application/json' \
  -H "X-Shared-Ollama-Project: $project" \
  -d @- <<JSON
{
  "model": "$model",
  "input": ["The sky is blue.", "Grass is green."]
}
JSON
echo
