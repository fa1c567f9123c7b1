#!/usr/bin/env bash
# The main job: builds in release mode and prints a throughput/latency report.
# Today: the matching engine on the exchange-core-like flow, against the lobster crate.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p caldera-benches --bin engine-bench
./target/release/engine-bench "$@"
