#!/usr/bin/env bash
# What int8 costs in label quality: a trained student grades the Cranfield evaluation pool (all
# 225 queries: judged documents plus the top-10 BM25 documents not judged, as grade 0) in fp32
# and in int8 (`--dtype int8`), on the CPU. Reports their grade agreement and largest |Δp|, then
# both against the human grades with `labelfleet eval`, fp32 as the baseline and a
# non-inferiority margin of 0.01 (paired bootstrap over queries).
# Results: bench/results/int8-quality-cranfield.json (the eval report, plus the agreement).
#
# usage: scripts/bench_int8_quality.sh [STUDENT_DIR]   (default: out/run/student, from `make run`)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
STUDENT="${1:-$REPO/out/run/student}"
OUT="$REPO/bench/results/int8-quality-cranfield.json"
if [[ ! -f "$STUDENT/labelfleet.json" ]]; then
  echo "no student checkpoint at $STUDENT: run 'make run' first (it writes out/run/student)" >&2
  exit 1
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PY" "$REPO/scripts/cranfield_pool.py" "$DATA" "$WORK/pool.jsonl"
for dtype in fp32 int8; do
  echo "== $dtype" >&2
  "$BIN" score --model "$STUDENT" --device cpu --dtype "$dtype" \
    --input "$WORK/pool.jsonl" --output "$WORK/grades-$dtype.jsonl"
done
"$PY" - "$REPO/scripts" "$WORK" <<'PY'
import json, pathlib, sys
sys.path.insert(0, sys.argv[1])
from cranfield_pool import labels_from_grades
work = pathlib.Path(sys.argv[2])
for dtype in ("fp32", "int8"):
    with (work / f"labels-{dtype}.jsonl").open("w") as f:
        for row in labels_from_grades(work / f"grades-{dtype}.jsonl"):
            f.write(json.dumps(row) + "\n")
PY
"$BIN" eval --qrels "$DATA/cranfield/qrels.txt" --unjudged-as-zero --margin 0.01 \
  --labels "$WORK/labels-fp32.jsonl" --name fp32 --labels "$WORK/labels-int8.jsonl" --name int8 \
  --baseline fp32 --json "$WORK/eval.json"
"$PY" - "$WORK" "$STUDENT" "$OUT" <<'PY'
import json, pathlib, sys
work, student, out = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
rows = {}
for dtype in ("fp32", "int8"):
    rows[dtype] = [json.loads(l) for l in (work / f"labels-{dtype}.jsonl").open()]
pairs = list(zip(rows["fp32"], rows["int8"]))
agree = sum(a["grade"] == b["grade"] for a, b in pairs) / len(pairs)
max_dp = max(abs(x - y) for a, b in pairs for x, y in zip(a["distribution"], b["distribution"]))
fp32_hist = [sum(a["grade"] == k for a, _ in pairs) for k in range(4)]
report = json.loads((work / "eval.json").read_text())
report["int8_vs_fp32"] = {"student": student, "pairs": len(pairs), "grade_agreement": agree,
                          "max_abs_dp": max_dp, "fp32_grade_histogram": fp32_hist}
out.write_text(json.dumps(report, indent=2) + "\n")
print(f"int8 vs fp32 on {len(pairs)} pairs: grade agreement {agree:.4f}, max |dp| {max_dp:.2e}, "
      f"fp32 grade histogram {fp32_hist}")
print(f"written: {out}")
PY
