#!/usr/bin/env bash
# Runs every test of the repository from a fresh clone: installs what the tests need (Debian
# packages, a Python venv for the Python client), checks formatting, lints and schema drift,
# then runs the whole workspace's tests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

echo "== install test prerequisites"
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The Kafka tests run a real Kafka-protocol broker: tansu 0.6.0 from crates.io, with the storage
# engines they use: dynostore (memory://) and libsql (sqlite://, which survives a broker restart).
# ~20-25 min to build on 2 cores, once. An install without libsql is replaced.
export PATH="$HOME/.cargo/bin:$PATH"
tansu_ok() {
  tansu --version 2>/dev/null | grep -qx "tansu 0.6.0" || return 1
  # cargo records the features it installed with.
  python3 - "$HOME/.cargo/.crates2.json" <<'PY'
import json, sys
try:
    installs = json.load(open(sys.argv[1]))["installs"]
except (OSError, ValueError, KeyError):
    sys.exit(0)  # installed some other way: trust it
for k, v in installs.items():
    if k.startswith("tansu 0.6.0"):
        sys.exit(0 if {"dynostore", "libsql"} <= set(v.get("features", [])) else 1)
sys.exit(0)
PY
}
if ! tansu_ok; then
  echo "installing tansu 0.6.0 (Kafka-protocol broker for the tests)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi
py="$root/target/pyenv"
if [ ! -x "$py/bin/python" ] || ! "$py/bin/python" -c "import zmq, flatbuffers, confluent_kafka" 2>/dev/null; then
  python3 -m venv "$py"
  "$py/bin/pip" install -q --disable-pip-version-check -r clients/python/requirements.txt
fi
export CALDERA_PYTHON="$py/bin/python"

echo "== toolchain"
cargo --version
rustc --version

echo "== format"
cargo fmt --all -- --check

echo "== schema drift"
bash schema/regen.sh --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
cargo test --workspace --locked

echo "== clean tree"
# Tests and runs write only under target/ or a temporary directory: anything else is a stray
# file that must not be committed.
if [ -n "$(git status --porcelain --untracked-files=all)" ]; then
  echo "the tests left files in the work tree:" >&2
  git status --porcelain --untracked-files=all >&2
  exit 1
fi
echo "work tree clean"
