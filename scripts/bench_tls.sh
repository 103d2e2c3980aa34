#!/usr/bin/env bash
# Cost of mTLS on the coordinator's dispatch path (issue 10): the dispatch run (a real
# coordinator with a real etcd on loopback, 64 simulated workers, zero cost per pair) over
# plaintext and over mTLS, alternating, ROUNDS times each (PAIRS pairs a run, submitted in one
# message, so under the 32 MiB message limit), in one process; prints the medians side by side. Results: bench/results/tls-<label>.jsonl.
#
# usage: scripts/bench_tls.sh            (needs target/release/labelfleet and etcd)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/target/release/labelfleet"
LABEL="${LABEL:-cpu-$(nproc)core}"
ROUNDS="${ROUNDS:-7}"
PAIRS="${PAIRS:-600000}"
OUT="$REPO/bench/results/tls-$LABEL.jsonl"
WORK="$(mktemp -d)"
source "$REPO/scripts/etcd_loopback.sh"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for size in 500 100; do
  echo "== task size $size" >&2
  RUST_LOG=warn "$BIN" bench-dispatch --etcd "http://127.0.0.1:$PORT" --task-size "$size" \
    --store "$WORK/store" --dispatch-pairs "$PAIRS" --tls-rounds "$ROUNDS" --scale-out "$OUT"
done
