"""Issue 11 exploration: is the student short of distinct queries? Give it hundreds, with no LLM.

Each of N documents sampled from the corpus gives one pseudo-query: a sentence of its body
(6-20 words, one drawn at random, not the title). The query's candidates are its source
document and 7 BM25 negatives, one from each seventh of ranks 1-30 (stratified, as the main job
draws its own from ranks 1-100). The committee
teacher grades every pair (`labelfleet score --model minilm --similarity-corpus`, the judge
the workers run), and the student is trained on those distributions by
`listwise_student.py ... pointwise` (the trainer's recipe). No human judgment is read.

usage: pseudo_distill.py pairs N OUT_PAIRS.jsonl        (pairs in `labelfleet score`'s input)
       labelfleet score --model minilm --device cpu --similarity-corpus corpus.jsonl \
           --input OUT_PAIRS.jsonl --output grades.jsonl
       pseudo_distill.py labels OUT_PAIRS.jsonl grades.jsonl OUT_LABELS.jsonl   (the trainer's rows)
       listwise_student.py OUT_LABELS.jsonl pool_odd.json out.jsonl 2 pointwise
"""
import json
import pathlib
import random
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import cranfield_pool  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cranfield"
NEGATIVES, DEPTH = 7, 30


def pseudo_query(doc: dict, rng: random.Random) -> str | None:
    """A sentence of the body, not its title (Cranfield's bodies open with the title)."""
    title = (doc.get("title") or "").strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.;?])\s+", doc["body"])
                 if 6 <= len(s.split()) <= 20 and s.strip() != title]
    return rng.choice(sentences) if sentences else None


def make_pairs(n: int, out: pathlib.Path) -> None:
    docs = {}
    for line in (DATA / "corpus.jsonl").open():
        d = json.loads(line)
        if (d.get("body") or "").strip():
            docs[d["id"]] = d
    bm25 = cranfield_pool.Bm25(docs)
    rng = random.Random(7)
    seeds = rng.sample(sorted(docs), len(docs))
    written = 0
    with out.open("w") as f:
        for seed in seeds:
            if written == n:
                break
            query = pseudo_query(docs[seed], rng)
            if query is None:
                continue
            scores = bm25.scores(query)
            ranked = [i for i in sorted(scores, key=lambda i: -scores[i]) if i != seed][:DEPTH]
            step = len(ranked) / NEGATIVES
            negatives = [ranked[int(k * step + rng.random() * step)] for k in range(NEGATIVES)]
            for did in [seed] + negatives:
                d = docs[did]
                meta = {k: d[k] for k in ("author", "source") if d.get(k)}
                f.write(json.dumps({"id": f"p{written}-d{did}", "query": query, "title": d.get("title"),
                                    "body": d["body"], "metadata": meta}) + "\n")
            written += 1
    print(f"{written} pseudo-queries, {written * (1 + NEGATIVES)} pairs")


def make_labels(pairs: pathlib.Path, grades: pathlib.Path, out: pathlib.Path) -> None:
    """The teacher's grades as the rows listwise_student.py reads (query, doc_id, distribution)."""
    queries = {p["id"]: p["query"] for p in map(json.loads, pairs.open())}
    with out.open("w") as f:
        for line in grades.open():
            g = json.loads(line)
            did = g["id"].split("-d", 1)[1]
            f.write(json.dumps({"query": queries[g["id"]], "doc_id": did,
                                "distribution": g["distribution"]}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "pairs":
        make_pairs(int(sys.argv[2]), pathlib.Path(sys.argv[3]))
    else:
        make_labels(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4]))
