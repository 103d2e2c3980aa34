#!/usr/bin/env bash
# The main job on the embedded default, as far as it is built: the engine on the Cranfield
# collection. Writes synthetic queries for seed documents (SmolLM2), then grades Cranfield
# (query, document) pairs with the local teacher (SmolLM2, zero-shot), printing tables.
# Outputs: out/demo/{seeds,queries,pairs,grades}.jsonl
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
PY="$HOME_DIR/venv/bin/python"
DATA="${LABELFLEET_DATA:-$REPO/../shared/data}"
BIN="$REPO/target/release/labelfleet"
OUT="$REPO/out/demo"
SEEDS="${SEEDS:-6}"
PAIRS="${PAIRS:-48}"
mkdir -p "$OUT"
[ -f "$DATA/cranfield/corpus.jsonl" ] || { echo "Cranfield not found under $DATA (set LABELFLEET_DATA)" >&2; exit 1; }

"$PY" - "$DATA/cranfield/corpus.jsonl" "$OUT/seeds.jsonl" "$SEEDS" <<'PY'
import json, random, sys
docs = [json.loads(l) for l in open(sys.argv[1])]
docs = [d for d in docs if d.get("body", "").strip()]
random.Random(7).shuffle(docs)
with open(sys.argv[2], "w") as f:
    for d in docs[: int(sys.argv[3])]:
        meta = {k: d[k] for k in ("author", "source") if d.get(k)}
        f.write(json.dumps({"id": d["id"], "title": d["title"], "body": d["body"], "metadata": meta}) + "\n")
PY
"$PY" "$REPO/scripts/cranfield_pairs.py" "$DATA" "$OUT/all-pairs.jsonl"
"$PY" -c "import random,sys; l=open(sys.argv[1]).readlines(); random.Random(7).shuffle(l); open(sys.argv[2],'w').writelines(l[:int(sys.argv[3])])" \
  "$OUT/all-pairs.jsonl" "$OUT/pairs.jsonl" "$PAIRS"

echo "== 1. query synthesis: $SEEDS Cranfield seed documents, SmolLM2-135M-Instruct" >&2
"$BIN" generate --model smollm2 --input "$OUT/seeds.jsonl" --output "$OUT/queries.jsonl" --per-doc 2
"$PY" - "$OUT/seeds.jsonl" "$OUT/queries.jsonl" <<'PY'
import json, sys
titles = {json.loads(l)["id"]: json.loads(l)["title"] for l in open(sys.argv[1])}
print(f"{'document':<60} | query")
print("-" * 60 + "-+-" + "-" * 50)
for l in open(sys.argv[2]):
    q = json.loads(l)
    print(f"{titles[q['doc_id']][:60]:<60} | {q['query']}")
PY

echo "== 2. teacher grading: $PAIRS judged Cranfield pairs, SmolLM2 zero-shot (grades 0-3)" >&2
"$BIN" score --model smollm2 --input "$OUT/pairs.jsonl" --output "$OUT/grades.jsonl"
echo "outputs in $OUT" >&2
