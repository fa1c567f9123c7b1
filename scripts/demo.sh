#!/usr/bin/env bash
# The main job: builds in release mode, starts `caldera serve` on free 127.0.0.1 ports with the
# embedded file journal (target/demo/journal, fsync every batch), drives
# it with the loadgen (closed loop at maximum throughput with the raw ZeroMQ echo ceiling
# measured in the same run, then open loop at a fixed rate), prints the throughput/latency
# report, stops the server with SIGTERM and prints its exit summary.
# Artifacts (latency plots, HdrHistogram logs, server log) go to target/demo/.
# The server also serves /metrics, so the report gives the CPU a request costs on both sides
# (server by thread, and the loadgen), and where it waits by stage.
# Order entry runs over CURVE with keys made for the run by `caldera init` (target/demo/keys);
# the echo ceiling is measured over CURVE too.
# Env: DURATION (default 10s), RATE (open-loop rate, default 500000), WAIT (server wait
# strategy, default auto = park on fewer than 4 cores), FSYNC (file journal: always |
# interval | never, default always), WINDOW (closed loop: requests in flight per connection,
# default 2048).
# Why 2048: with an fsync per batch, a closed loop answers (requests in flight) / (one round
# trip, which includes an fsync) per second. At 4 x 512 in flight the round trip, not the CPU,
# is the limit (a two-core machine keeps part of a core idle), so that run does not measure the
# maximum; at 4 x 2048 the CPU is (docs/benchmarks.md, "How deep the window").
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
RATE=${RATE:-500000}
WAIT=${WAIT:-auto}
FSYNC=${FSYNC:-always}
WINDOW=${WINDOW:-2048}
out=target/demo
mkdir -p "$out"

cargo build --release --locked -p caldera-node -p caldera-loadgen
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
oe="tcp://127.0.0.1:$(port)"
md="tcp://127.0.0.1:$(port)"
metrics="127.0.0.1:$(port)"

rm -rf "$out/journal" "$out/keys"
./target/release/caldera init "$out/keys" > /dev/null 2>&1
./target/release/caldera serve --wait "$WAIT" --order-entry "$oe" --market-data "$md" \
  --journal "file://$out/journal" --fsync "$FSYNC" --metrics "$metrics" --keys "$out/keys" \
  > "$out/serve-summary.json" 2> "$out/serve.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), server wait strategy: $WAIT"
echo "== closed loop, maximum throughput ($DURATION, 4 connections x $WINDOW requests in flight)"
./target/release/caldera-loadgen closed --endpoint "$oe" --keys "$out/keys" --duration "$DURATION" --connections 4 --window "$WINDOW" \
  --echo-baseline --server-metrics "http://$metrics/metrics" \
  --plot "$out/closed-latency.svg" --hist-log "$out/closed-latency.hlog"
echo
echo "== open loop at $RATE requests/s ($DURATION), latency from planned send times"
./target/release/caldera-loadgen open --endpoint "$oe" --keys "$out/keys" --duration "$DURATION" --connections 4 --rate "$RATE" \
  --server-metrics "http://$metrics/metrics" \
  --plot "$out/open-latency.svg" --hist-log "$out/open-latency.hlog" --warmup-orders 0

kill -TERM $server
wait $server
trap - EXIT
echo
echo "== server exit summary (SIGTERM → drained, exit 0)"
cat "$out/serve-summary.json"
echo "== replay of the journal (must give the same state hash)"
./target/release/caldera replay --journal "file://$out/journal"
echo "artifacts: $out/{closed,open}-latency.{svg,hlog}, $out/serve.log"
