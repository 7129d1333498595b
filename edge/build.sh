#!/usr/bin/env bash
# Builds the Worker (edge/build/) with worker-build, using only pinned local tools: wasm-bindgen
# from `cargo install`, wasm-opt and esbuild from npm. Nothing is downloaded. Prints the size.
# Run tests/setup.sh first (README command 1 and 2 both do). Skips the build when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$HOME/.cargo/bin/wasm-bindgen}"
export WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$root/node_modules/@esbuild/linux-x64/bin/esbuild"
for tool in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  [ -x "$tool" ] || { echo "edge/build.sh: $tool is missing; run tests/setup.sh" >&2; exit 1; }
done

cd "$root"
out=edge/build/index.js
newer=$(find edge/src functions/src functions/migrations durable/src edge/Cargo.toml functions/Cargo.toml \
  durable/Cargo.toml Cargo.toml Cargo.lock -newer "$out" -print -quit 2>/dev/null || echo rebuild)
if [ -f "$out" ] && [ -z "$newer" ] && [ -z "${FORCE_BUILD:-}" ]; then
  echo "==> Worker is up to date ($out)"
else
  echo "==> building the Worker (worker-build --release)"
  (cd edge && worker-build --release)
fi

wasm="$root/edge/build/index_bg.wasm"
raw=$(stat -c %s "$wasm")
gz=$(gzip -9 -c "$wasm" | wc -c)
printf '==> Worker wasm: %s bytes raw, %s bytes gzip (%s)\n' "$raw" "$gz" "${wasm#"$root"/}"
