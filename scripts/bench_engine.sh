#!/usr/bin/env bash
# Engine benchmark: labelfleet vs Python transformers, sentence-transformers and ONNX Runtime
# (fp32 and its dynamic int8) on the same models, inputs and thread count, one after the other in
# one run. The MiniLM student runs with `--dtype int8`, which times the engine's fp32 and int8
# interleaved on the same pairs and reports their grade agreement. Inputs: Cranfield
# (query, judged document) pairs, text only. Results: bench/results/engine-<label>.jsonl.
#
# usage: scripts/bench_engine.sh [MINILM_PAIRS] [SMOLLM2_PAIRS]   (defaults 500 and 120)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
PY="$HOME_DIR/venv/bin/python"
DATA="${LABELFLEET_DATA:-$REPO/../shared/data}"
BIN="$REPO/target/release/labelfleet"
THREADS="${THREADS:-$(nproc)}"
LABEL="${LABEL:-cpu-$(nproc)core}"
WORK="$(mktemp -d)"
OUT="$REPO/bench/results/engine-$LABEL.jsonl"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

"$PY" "$REPO/scripts/cranfield_pairs.py" "$DATA" "$WORK/pairs.jsonl"
for spec in "minilm:${1:-500}:32:int8" "smollm2:${2:-120}:16:fp32"; do
  IFS=: read -r model n batch dtype <<< "$spec"
  echo "== $model: $n pairs, $THREADS threads, engine $dtype" >&2
  "$BIN" bench --model "$model" --input "$WORK/pairs.jsonl" --limit "$n" --threads "$THREADS" \
    --dtype "$dtype" --out "$OUT" --dump "$WORK/$model" --label "$LABEL"
  "$PY" "$REPO/scripts/bench_python.py" "$WORK/$model" --threads "$THREADS" --batch-size "$batch" \
    --label "$LABEL" --model-name "$model" 2>/dev/null | grep "^{" >> "$OUT"
done
"$PY" "$REPO/scripts/bench_table.py" "$OUT"
rm -rf "$WORK"
