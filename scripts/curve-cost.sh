#!/usr/bin/env bash
# What CURVE costs: closed-loop runs against `caldera serve` with CURVE (keys from
# `caldera init`) and with --insecure, alternated ROUNDS times in one session so both see the
# same machine, each printing requests/s and the CPU per answered request on both sides.
# File journal, fsync every batch, 4 connections × window 512 × batch 64 (as scripts/demo.sh).
#   bash scripts/curve-cost.sh [ROUNDS] [DURATION]      (default 3 rounds of 10s)
# Writes only under target/curve-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
duration=${2:-10s}
out=target/curve-cost
rm -rf "$out"
mkdir -p "$out"
cargo build --release --locked -p caldera-node -p caldera-loadgen
./target/release/caldera init "$out/keys" > /dev/null 2>&1
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # mode: curve | insecure
  local mode=$1 oe md metrics server auth
  oe="tcp://127.0.0.1:$(port)"; md="tcp://127.0.0.1:$(port)"; metrics="127.0.0.1:$(port)"
  if [ "$mode" = curve ]; then auth=(--keys "$out/keys"); else auth=(--insecure); fi
  rm -rf "$out/journal"
  ./target/release/caldera serve --order-entry "$oe" --market-data "$md" --metrics "$metrics" \
    --journal "file://$out/journal" --fsync always "${auth[@]}" > /dev/null 2> "$out/serve-$mode.log" &
  server=$!
  ./target/release/caldera-loadgen closed --endpoint "$oe" "${auth[@]}" --duration "$duration" \
    --connections 4 --window 512 --server-metrics "http://$metrics/metrics" --json 2> /dev/null \
    | python3 -c '
import json, sys
j = json.loads(sys.stdin.read().splitlines()[-1]); c = j.get("cost", {})
print("%-8s %10.0f requests/s  server %.2f µs/request  loadgen %.2f µs/request" % (sys.argv[1],
      j["requests_per_s"], c.get("server_us_per_request", float("nan")),
      c.get("loadgen_us_per_request", float("nan"))))' "$mode"
  kill -TERM "$server"; wait "$server" || true
}

echo "== $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $rounds rounds of $duration"
for r in $(seq 1 "$rounds"); do
  run curve
  run insecure
done
