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
py="$root/target/pyenv"
if [ ! -x "$py/bin/python" ] || ! "$py/bin/python" -c "import zmq, flatbuffers" 2>/dev/null; then
  python3 -m venv "$py"
  "$py/bin/pip" install -q --disable-pip-version-check -r gateway/clients/python/requirements.txt
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
