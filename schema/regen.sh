#!/usr/bin/env bash
# Regenerates the committed FlatBuffers code (Rust and Python) from fbs/caldera.fbs with flatc
# 23.5.26, built from source by the `flatc` crate (needs cmake). With --check, fails if the
# committed code differs from what the schema generates (drift check, run by scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")"
command -v cmake >/dev/null || { echo "regen.sh: cmake is required (apt-get install -y cmake)" >&2; exit 2; }
cargo build --release --quiet --manifest-path codegen/Cargo.toml --target-dir ../target/flatc
flatc=../target/flatc/release/caldera-flatc
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$flatc" --rust -o "$tmp/rust" fbs/caldera.fbs
"$flatc" --python -o "$tmp/python" fbs/caldera.fbs
if [ "${1:-}" = "--check" ]; then
  diff -ru "$tmp/rust/caldera_generated.rs" src/caldera_generated.rs >/dev/null \
    && diff -ru "$tmp/python/caldera" ../clients/python/caldera >/dev/null \
    || { echo "schema drift: run schema/regen.sh and commit the result" >&2; diff -ru "$tmp/rust/caldera_generated.rs" src/caldera_generated.rs | head -40; exit 1; }
  echo "schema: generated code matches fbs/caldera.fbs"
else
  cp "$tmp/rust/caldera_generated.rs" src/caldera_generated.rs
  rm -rf ../clients/python/caldera
  mkdir -p ../clients/python
  cp -r "$tmp/python/caldera" ../clients/python/caldera
  echo "schema: regenerated"
fi
