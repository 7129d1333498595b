#!/usr/bin/env bash
# README command 2: every check and test, as CI runs it. Installs what it needs first.
#   format, clippy (native and both wasm targets), the portability rules, the wasm builds
#   (Worker with its size, Spin component), unit tests and the end-to-end tests against the
#   Worker in workerd and the component under `wasmtime serve`; the guardrail policies (their
#   own workspace: unit tests, components built, checked for imports, run under wasmtime).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source tests/setup.sh

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "functions/ must not depend on worker"
if cargo tree -p tether-functions --target all -e normal,build --prefix none | grep -qE '^worker v'; then
  echo "functions/ depends on the worker crate; it must stay runtime-agnostic" >&2
  exit 1
fi

step "clippy (native: every crate but the two wasm-only ones)"
cargo clippy --all-targets --locked -- -D warnings
step "clippy (wasm32-unknown-unknown: the Worker)"
cargo clippy -p tether-edge -p tether-functions -p tether-durable --target wasm32-unknown-unknown --locked -- -D warnings
step "clippy (wasm32-wasip2: the Spin component)"
cargo clippy -p tether-spin -p tether-functions --target wasm32-wasip2 --locked -- -D warnings

# Release builds for the wasm targets share their artifacts with the Spin and Worker builds below.
step "functions/ builds for every target"
cargo build -p tether-functions --locked
cargo build -p tether-functions --locked --release --target wasm32-unknown-unknown
cargo build -p tether-functions --locked --release --target wasm32-wasip2

step "the Spin component (wasm32-wasip2)"
cargo build -p tether-spin --locked --release --target wasm32-wasip2
spin_wasm=target/wasm32-wasip2/release/tether_spin.wasm
printf 'Spin component: %s bytes raw, %s bytes gzip\n' "$(stat -c %s "$spin_wasm")" "$(gzip -9 -c "$spin_wasm" | wc -c)"

step "the Worker"
bash edge/build.sh

step "the tether daemon (the end-to-end tests run it)"
cargo build -p tether --locked

step "guardrail policies (wasm-plugins, its own workspace): format, clippy, unit tests, components"
(
  cd wasm-plugins
  cargo fmt --all -- --check
  cargo clippy --all-targets --locked -- -D warnings
  cargo clippy --target wasm32-unknown-unknown --locked -- -D warnings
  cargo test --locked
)
bash wasm-plugins/build.sh
python3 wasm-plugins/smoke.py

step "tests: unit and end to end"
cargo test --locked
