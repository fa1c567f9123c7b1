#!/usr/bin/env bash
# Kills the active primary and measures how long until the other node is ready (= serving as
# the primary), ROUNDS times. Readiness comes from each node's /readyz.
#   bash infra/chaos.sh compose [ROUNDS]   # infra/compose.yaml running (COMPOSE="podman compose" to override)
#   bash infra/chaos.sh k8s [ROUNDS]       # infra/k8s/caldera.yaml applied (namespace caldera)
# For a single host without containers, scripts/chaos.sh runs the same scenario with real
# processes and checks every report against the journal.
set -euo pipefail
mode=${1:?usage: chaos.sh compose|k8s [rounds]}
rounds=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
now_ms() { date +%s%3N; }

case "$mode" in
  compose)
    compose=${COMPOSE:-docker compose}
    declare -A port=([caldera-a]=9464 [caldera-b]=9465)
    ready() { curl -fsS -o /dev/null "http://127.0.0.1:${port[$1]}/readyz"; }
    for r in $(seq 1 "$rounds"); do
      if ready caldera-a; then p=caldera-a; s=caldera-b; elif ready caldera-b; then p=caldera-b; s=caldera-a;
      else echo "no ready primary" >&2; exit 1; fi
      t0=$(now_ms)
      $compose -f "$here/compose.yaml" kill -s KILL "$p" >/dev/null
      until ready "$s"; do sleep 0.01; done
      echo "{\"round\":$r,\"killed\":\"$p\",\"new_primary\":\"$s\",\"takeover_ms\":$(( $(now_ms) - t0 ))}"
      $compose -f "$here/compose.yaml" start "$p" >/dev/null   # rejoins as the standby
      sleep 5
    done ;;
  k8s)
    ns=${NAMESPACE:-caldera}
    primary() { kubectl -n "$ns" get pods -l app=caldera \
      -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
      | awk '$2=="True"{print $1}'; }
    for r in $(seq 1 "$rounds"); do
      p=$(primary); [ -n "$p" ] || { echo "no ready primary" >&2; exit 1; }
      t0=$(now_ms)
      kubectl -n "$ns" delete pod "$p" --grace-period=0 --force >/dev/null 2>&1
      while n=$(primary); [ -z "$n" ] || [ "$n" = "$p" ]; do sleep 0.05; done
      echo "{\"round\":$r,\"killed\":\"$p\",\"new_primary\":\"$n\",\"takeover_ms\":$(( $(now_ms) - t0 ))}"
      kubectl -n "$ns" wait --for=condition=PodScheduled pod/"$p" --timeout=120s >/dev/null
      sleep 10
    done ;;
  *) echo "usage: chaos.sh compose|k8s [rounds]" >&2; exit 2 ;;
esac
