#!/usr/bin/env bash
# Failover chaos, repeated: ROUNDS (default 10) kill -9 rounds of the primary under load with the
# file journal and with Kafka (tansu), then the SIGSTOP zombie test for each. Every round checks
# that nothing acknowledged is lost or duplicated and, per account, that the executions the
# clients' applications received equal the journal's ("executions delivered = executions
# journaled": fills and dones, none missing, none twice; open orders = the book); the final
# state equals a replay.
# Prints one JSON line per round and a p50/max summary per journal (release build).
#
#   bash scripts/chaos.sh            # 10 rounds each
#   ROUNDS=3 bash scripts/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "chaos.sh: tansu is missing; run scripts/test.sh once (it installs tansu 0.6.0)" >&2; exit 2; }
export CALDERA_CHAOS_ROUNDS="${ROUNDS:-10}"
cargo test --release --locked -p caldera-node --test failover -- --nocapture --test-threads 1 2>&1 \
  | grep -E '^\{|^test |test result|panicked|assertion|left:|right:' 
