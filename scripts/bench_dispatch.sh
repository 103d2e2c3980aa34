#!/usr/bin/env bash
# Coordinator dispatch and scaling benchmark (issue 3): a real coordinator with a real etcd on
# loopback, simulated workers of fixed cost per pair (the engine stand-in, used only here).
# Runs task sizes 500 and 100; results: bench/results/dispatch-<label>.jsonl and the tables.
#
# usage: scripts/bench_dispatch.sh            (needs target/release/labelfleet and etcd)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/target/release/labelfleet"
LABEL="${LABEL:-cpu-$(nproc)core}"
OUT="$REPO/bench/results/dispatch-$LABEL.jsonl"
WORK="$(mktemp -d)"
source "$REPO/scripts/etcd_loopback.sh"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
for size in 500 100; do
  echo "== task size $size" >&2
  RUST_LOG=warn "$BIN" bench-dispatch --etcd "http://127.0.0.1:$PORT" --task-size "$size" \
    --store "$WORK/store" --out "$OUT"
done
