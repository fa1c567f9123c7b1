#!/usr/bin/env bash
# Fuzzes every target in fuzz/ with libFuzzer on stable Rust: the targets are built with LLVM's
# coverage instrumentation (the flags cargo-fuzz passes, minus the nightly-only sanitizer
# flag) and linked with libFuzzer through the libfuzzer-sys crate. No nightly, no cargo-fuzz.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# New corpus entries go to target/fuzz/corpus/<target> (merged into fuzz/corpus/<target> with
# `FUZZ_MERGE=1`); crashes to target/fuzz/artifacts/<target>. A crash becomes a regression
# test by copying its input into fuzz/corpus/<target>/ (replayed by `cargo test -p caldera-fuzz`).
# Prints executions and results per target, and a summary table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame journal_record segment_scan snapshot_restore engine_commands)

triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR="$root/target/fuzz/build"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "== build (instrumented, release, $triple)"
cargo build --locked --release --manifest-path fuzz/libfuzzer/Cargo.toml --target "$triple" --bins
bin="$CARGO_TARGET_DIR/$triple/release"
unset RUSTFLAGS CARGO_TARGET_DIR

for t in "${targets[@]}"; do
  if [ -z "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ]; then
    echo "== seeding fuzz/corpus"
    cargo run --locked -q -p caldera-fuzz --example seeds -- fuzz/corpus
    break
  fi
done

# glibc keeps freed memory instead of returning it to the kernel after every run: the targets
# build engines of a few hundred KB per input, and page faults would cost more than the target.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864

summary=()
status=0
for t in "${targets[@]}"; do
  work="target/fuzz/corpus/$t"
  art="target/fuzz/artifacts/$t/"
  mkdir -p "$work" "$art"
  log="target/fuzz/$t.log"
  # Inputs as large as a target needs (a segment seed is ~20 KB; a command script of 1 KB is
  # ~120 commands, each followed by a full integrity check).
  case $t in
    segment_scan) max_len=24576 ;;
    journal_record) max_len=8192 ;;
    engine_commands) max_len=1024 ;;
    *) max_len=4096 ;;
  esac
  echo "== $t: ${secs}s"
  set +e
  "$bin/$t" "$work" "fuzz/corpus/$t" -max_total_time="$secs" -artifact_prefix="$art" \
    -print_final_stats=1 -max_len="$max_len" -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -eq 0 ]; then result="no crash"; else result="FAILED (rc $rc, see $log and $art)"; status=1; tail -30 "$log"; fi
  summary+=("$(printf '%-18s %12s execs %8s/s  cov %6s  %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$result")")
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ $rc -eq 0 ]; then
    "$bin/$t" -merge=1 "fuzz/corpus/$t" "$work" >/dev/null 2>&1
  fi
done
echo
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $status
