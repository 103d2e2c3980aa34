#!/usr/bin/env bash
# Coordinator at scale (issue 9): jobs of 1M and 10M pairs submitted by streaming (coordinator
# peak RSS, submit, dispatch at 64 workers and task size 100, fetch), and leader failover after
# (a) one 10M-pair job at task size 50 (200,000 tasks) and (b) ten
# finished 1M-pair jobs. A real coordinator and a real etcd on loopback, simulated workers of
# zero cost per pair (the engine stand-in of the dispatch benchmark).
# Results: bench/results/scale-<label>.jsonl, one JSON object per measurement.
#
# usage: scripts/bench_scale.sh            (needs target/release/labelfleet and etcd)
#        STEPS=jobs APPEND=1 scripts/bench_scale.sh   (only the streamed jobs, results appended)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/target/release/labelfleet"
LABEL="${LABEL:-cpu-$(nproc)core}"
OUT="$REPO/bench/results/scale-$LABEL.jsonl"
WORK="$(mktemp -d)"
source "$REPO/scripts/etcd_loopback.sh"
mkdir -p "$(dirname "$OUT")"
STEPS="${STEPS:-failover jobs}"
[ "${APPEND:-0}" = 1 ] || : > "$OUT"
mkdir -p "$WORK/store"
run() { RUST_LOG=warn "$BIN" bench-dispatch --etcd "http://127.0.0.1:$PORT" --store "$WORK/store" \
          --dispatch-workers 64 --scale-out "$OUT" "$@"; }
if [[ " $STEPS " == *" failover "* ]]; then
  echo "== failover after one 10M-pair job, task size 50" >&2
  run --failover-jobs 1 --failover-pairs 10000000 --failover-task-size 50
  echo "== failover after ten 1M-pair jobs, task size 100" >&2
  run --failover-jobs 10 --failover-pairs 1000000 --failover-task-size 100
fi
if [[ " $STEPS " == *" jobs "* ]]; then
  echo "== streamed jobs of 1M and 10M pairs, task size 100, 64 workers, coordinator in its own process" >&2
  run --scale-pairs 1000000,10000000 --task-size 100
fi
cat "$OUT"
