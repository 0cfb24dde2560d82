#!/usr/bin/env bash
# Install (first run), prepare the offline models and serve the gateway on port 8000 (serve's --host/--port, or
# SHARED_OLLAMA_HOST/SHARED_OLLAMA_PORT, say otherwise). With no Ollama installed, the embedded engine (llama.cpp)
# is started and supervised. "ready on <url>" is printed once the service answers its health check, then how to
# type the CLI as plain `shared-ollama` (linked into ~/.local/bin when that directory is on PATH).
# Sourced (by the tests), it only defines its functions.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

READY_WAIT_SECONDS="${READY_WAIT_SECONDS:-600}"

# serve_url ARGS...: the URL `shared-ollama serve ARGS...` answers on (a wildcard host as loopback).
serve_url() {
  local host="${SHARED_OLLAMA_HOST:-127.0.0.1}" port="${SHARED_OLLAMA_PORT:-8000}"
  while [ $# -gt 0 ]; do
    case "$1" in
      --host) [ $# -gt 1 ] && host="$2" && shift ;;
      --host=*) host="${1#--host=}" ;;
      --port) [ $# -gt 1 ] && port="$2" && shift ;;
      --port=*) port="${1#--port=}" ;;
    esac
    shift
  done
  case "$host" in
    "" | 0.0.0.0) host=127.0.0.1 ;;
    :: | "[::]") host="[::1]" ;;
    \[*) ;;
    *:*) host="[$host]" ;;
  esac
  printf 'http://%s:%s\n' "$host" "$port"
}

# offer_cli: make `shared-ollama` typeable. Nothing to do when it is on PATH already; else a link in ~/.local/bin
# when that directory exists and is on PATH (nothing is written anywhere else); else say how.
offer_cli() {
  local cli="$VENV/bin/shared-ollama" local_bin="$HOME/.local/bin" found
  found="$(command -v shared-ollama 2>/dev/null || true)"
  if [ -n "$found" ] && [ "$(readlink -f "$found")" = "$(readlink -f "$cli")" ]; then
    log "the CLI is on your PATH: shared-ollama --help"
    return 0
  fi
  if [ -n "$found" ]; then
    log "another shared-ollama comes first on your PATH ($found); this one is $cli"
    return 0
  fi
  case ":$PATH:" in
    *":$local_bin:"*)
      if [ -d "$local_bin" ] && [ ! -e "$local_bin/shared-ollama" ] && [ ! -L "$local_bin/shared-ollama" ] &&
        ln -s "$cli" "$local_bin/shared-ollama" 2>/dev/null; then
        log "linked the CLI into $local_bin: shared-ollama --help"
        return 0
      fi
      ;;
  esac
  log "the CLI is $cli; to type it as shared-ollama:"
  log "  mkdir -p ~/.local/bin && ln -s $cli ~/.local/bin/ && export PATH=\"\$HOME/.local/bin:\$PATH\""
}

# announce_ready URL PID: wait (bounded) until the service at URL is healthy, then say so and how to use the CLI;
# say nothing once process PID (the server) is gone.
announce_ready() {
  local url="$1" pid="$2"
  if "$VENV/bin/shared-ollama" health --url "$url" --wait "$READY_WAIT_SECONDS" --pid "$pid" >/dev/null 2>&1; then
    log "ready on $url"
    log "try it: shared-ollama chat smollm2:135m \"Why is the sky blue?\""
    offer_cli
  elif kill -0 "$pid" 2>/dev/null; then
    log "not ready on $url after ${READY_WAIT_SECONDS} s; see shared-ollama health --url $url and the logs"
  fi
}

main() {
  cd "$ROOT"
  ensure_venv
  install_models
  announce_ready "$(serve_url "$@")" "$$" &
  exec "$VENV/bin/shared-ollama" serve "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
