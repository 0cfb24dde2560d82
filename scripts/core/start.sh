#!/usr/bin/env bash
# Install (first run), prepare the offline models and serve the gateway on port 8000.
# With no Ollama installed, the embedded engine (llama.cpp) is started and supervised.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
ensure_venv
install_models
exec "$VENV/bin/shared-ollama" serve "$@"
