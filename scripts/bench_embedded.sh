#!/usr/bin/env bash
# Grading throughput of the engine called directly (`labelfleet score`) against the same model
# behind the embedded cluster (`labelfleet serve` + `labelfleet submit`: coordinator, worker,
# loopback gRPC, tasks of 64 pairs), on the same Cranfield pairs, one after the other.
#
# usage: scripts/bench_embedded.sh [TEACHER_PAIRS] [STUDENT_PAIRS]   (defaults 64 and 500)
# Appends JSON lines to bench/results/embedded-cpu-2core.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TEACHER_N=${1:-64}
STUDENT_N=${2:-500}
HOME_DIR="${LABELFLEET_HOME:-$HOME/.cache/labelfleet}"
PY="$HOME_DIR/venv/bin/python"
BIN=target/release/labelfleet
DATA="${LABELFLEET_DATA:-$(cd .. && pwd)/shared/data}"
OUT=bench/results/embedded-cpu-2core.jsonl
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$PY" scripts/cranfield_pairs.py "$DATA" "$work/all.jsonl"
# the cluster takes {id, query, doc_id} over an uploaded corpus; ids are q<qid>-d<docid>
"$PY" - "$work" "$TEACHER_N" "$STUDENT_N" <<'EOF'
import json, sys
work, n_t, n_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = [json.loads(l) for l in open(f"{work}/all.jsonl")]
for name, n in (("teacher", n_t), ("student", n_s)):
    with open(f"{work}/{name}.jsonl", "w") as direct, open(f"{work}/{name}-job.jsonl", "w") as job:
        for p in pairs[:n]:
            direct.write(json.dumps(p) + "\n")
            job.write(json.dumps({"id": p["id"], "query": p["query"], "doc_id": p["id"].split("-d")[1]}) + "\n")
EOF

now() { date +%s.%N; }
record() { # model mode pairs seconds
  printf '{"model":"%s","mode":"%s","pairs":%d,"seconds":%.2f,"pairs_per_s":%.2f}\n' \
    "$1" "$2" "$3" "$4" "$(echo "$3 / $4" | bc -l)" | tee -a "$OUT"
}

for spec in "smollm2 teacher $TEACHER_N" "minilm student $STUDENT_N"; do
  set -- $spec
  model=$1 set=$2 n=$3
  t0=$(now)
  "$BIN" score --model "$model" --device cpu --input "$work/$set.jsonl" --output "$work/$set-direct.out" 2>/dev/null
  record "$model" "direct (labelfleet score)" "$n" "$(echo "$(now) - $t0" | bc -l)"

  rm -rf "$work/store"
  "$BIN" serve --listen 127.0.0.1:7170 --trainer-listen 127.0.0.1:7171 --store "$work/store" 2>/dev/null &
  serve=$!
  sleep 2
  t0=$(now)
  "$BIN" submit --coordinator http://127.0.0.1:7170 --corpus "$DATA/cranfield/corpus.jsonl" \
    --pairs "$work/$set-job.jsonl" --model "$model" --task-size 64 --max-tokens 512 --watch >/dev/null 2>&1
  record "$model" "embedded cluster (serve + submit, 64-pair tasks)" "$n" "$(echo "$(now) - $t0" | bc -l)"
  kill "$serve"; wait "$serve" 2>/dev/null || true
done
