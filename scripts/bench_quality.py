"""Label quality on Cranfield (issue 11): every labeler against the human grades, with 95%
intervals, and the student against its teacher (non-inferiority, margin 0.05).

The report covers the **even-numbered** queries only. The odd-numbered ones are for making
decisions (prompts, judges, weights): `cranfield_pool.py DATA OUT odd` builds their pool.
The human grades are only read here, by `labelfleet eval`; nothing is trained or tuned on them.

Two pools, each over the even-numbered queries:
- `top10`, the documented rule: the judged documents plus the top-10 BM25 documents not
  judged, as grade 0. Report: bench/results/quality-cranfield.json.
- `ranks100`: the judged documents plus 10 unjudged documents drawn from BM25's ranks 1-100.
  Report: bench/results/quality-cranfield-ranks100.json.

Labelers:
- `teacher`: the main job's teacher, the committee of `labelfleet run --judges similarity` (its
  default): MiniLM's similarity with pseudo-relevance feedback from the corpus, graded by the
  z-score among the corpus (`labelfleet score --model minilm --similarity-corpus CORPUS`, the
  judge the workers run; tests/committee.rs checks that the two agree);
- `decoder`: SmolLM2 read out with prompt grade-v1 (`labelfleet score --model smollm2`), the
  decoder judge of `--judges similarity,decoder` and the teacher before issue 11 (documented
  pool only: it grades about 2 pairs/s);
- `student`: the student the main job distilled (out/run/student unless given);
- `encoder-cosine`: all-MiniLM-L6-v2 zero-shot, the cosine of the mean-pooled query and body;
- `bm25`: the pool's BM25 score.
The last two are scores, not grades: they are given the grade of their within-query min-max
scaled score (0-3), so only their orderings (pairwise accuracy, NDCG@10) mean anything.

usage: bench_quality.py [--student DIR] [--pools top10,ranks100]
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import cranfield_pool  # noqa: E402

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
DATA = pathlib.Path(os.environ.get("LABELFLEET_DATA", REPO.parent / "shared" / "data"))
BIN = REPO / "target" / "release" / "labelfleet"
REPORTS = {"top10": "quality-cranfield.json", "ranks100": "quality-cranfield-ranks100.json"}


def write_jsonl(path: pathlib.Path, rows) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def scaled_grades(pairs: list[dict], score: str) -> list[dict]:
    """Labels of a score: the score orders, and its within-query min-max scaling gives a grade."""
    by_query = {}
    for p in pairs:
        by_query.setdefault(p["query_id"], []).append(p[score])
    out = []
    for p in pairs:
        lo, hi = min(by_query[p["query_id"]]), max(by_query[p["query_id"]])
        grade = round(3 * (p[score] - lo) / (hi - lo)) if hi > lo else 0
        out.append({"query_id": p["query_id"], "doc_id": p["doc_id"], "grade": grade, "expected": p[score]})
    return out


def minilm_embedder():
    """all-MiniLM-L6-v2 as a sentence encoder: texts in, mean-pooled unit vectors out (256 tokens,
    batches of 32)."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    torch.set_num_threads(os.cpu_count() or 1)
    path = HOME / "models" / "all-minilm-l6-v2"
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def embed(texts):
        vecs = []
        for i in range(0, len(texts), 32):
            batch = tok(texts[i:i + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vecs.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(vecs)

    return embed


def encoder_cosine(pairs: list[dict]) -> None:
    """Adds `cosine`: all-MiniLM-L6-v2, query against body."""
    embed = minilm_embedder()
    sims = (embed([p["query"] for p in pairs]) * embed([p["body"] for p in pairs])).sum(-1)
    for p, s in zip(pairs, sims.tolist()):
        p["cosine"] = s


def engine_labels(model: str, pool_file: pathlib.Path, work: pathlib.Path, name: str,
                  extra: tuple = ()) -> pathlib.Path:
    """Grades the pool with `labelfleet score` and returns the labels file."""
    grades = work / f"grades-{name}.jsonl"
    subprocess.run([str(BIN), "score", "--model", model, "--device", "cpu", "--input", str(pool_file),
                    "--output", str(grades), *extra], check=True)
    labels = work / f"labels-{name}.jsonl"
    write_jsonl(labels, cranfield_pool.labels_from_grades(grades))
    return labels


def run_pool(negatives: str, student: pathlib.Path, work: pathlib.Path) -> None:
    pairs = cranfield_pool.pool(DATA / "cranfield", "even", negatives)
    print(f"== pool {negatives}: {len(pairs)} pairs over "
          f"{len({p['query_id'] for p in pairs})} even-numbered queries", file=sys.stderr, flush=True)
    pool_file = work / f"pool-{negatives}.jsonl"
    write_jsonl(pool_file, pairs)
    encoder_cosine(pairs)
    labels = {
        "teacher": engine_labels("minilm", pool_file, work, f"teacher-{negatives}",
                                 ("--similarity-corpus", str(DATA / "cranfield" / "corpus.jsonl"))),
        "student": engine_labels(str(student), pool_file, work, f"student-{negatives}"),
    }
    if negatives == "top10":
        # SmolLM2 grades about 2 pairs/s here: on the documented pool only (the bar), to
        # keep the benchmark near 12 minutes; its figures on the second pool are in BENCHMARKS.md
        labels["decoder"] = engine_labels("smollm2", pool_file, work, f"decoder-{negatives}")
    for name, score in [("encoder-cosine", "cosine"), ("bm25", "bm25")]:
        labels[name] = work / f"labels-{name}-{negatives}.jsonl"
        write_jsonl(labels[name], scaled_grades(pairs, score))
    report = REPO / "bench" / "results" / REPORTS[negatives]
    cmd = [str(BIN), "eval", "--qrels", str(DATA / "cranfield" / "qrels.txt"), "--unjudged-as-zero",
           "--baseline", "teacher", "--json", str(report)]
    for name, path in labels.items():
        cmd += ["--labels", str(path), "--name", name]
    subprocess.run(cmd, check=True)
    record = json.loads(report.read_text())
    record["pool"] = {"queries": "even-numbered", "negatives": negatives, "pairs": len(pairs),
                      "student": str(student), "command": "make bench-quality"}
    report.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {report}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", type=pathlib.Path, default=REPO / "out" / "run" / "student")
    ap.add_argument("--pools", default="top10,ranks100")
    args = ap.parse_args()
    if not (args.student / "labelfleet.json").exists():
        sys.exit(f"no student checkpoint at {args.student}: run 'make run' first (it writes out/run/student)")
    with tempfile.TemporaryDirectory() as work:
        for negatives in args.pools.split(","):
            run_pool(negatives, args.student, pathlib.Path(work))


if __name__ == "__main__":
    main()
