"""Issue 11 exploration: all-MiniLM-L6-v2 cosine with pseudo-relevance feedback in embedding space
(Rocchio: the query's vector moved toward the mean of its top-k documents by cosine over the
whole corpus). Within a query this orders documents as cluster smoothing does (a document's
cosine plus alpha times its mean cosine to those top-k documents). No training, no labels: k
and alpha are a small fixed grid, read on the odd-numbered queries only (the decision split).

Writes one row per pool pair with `q`, `d`, `grade` (for judges_metrics.py) and a score column
per variant.

usage: prf_cosine.py OUT.jsonl [odd]
then:  judges_metrics.py OUT.jsonl cos,bm25,prf_k3_a0.5,prf_k3_a1.0,...
"""
import json
import os
import pathlib
import sys

import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import cranfield_pool  # noqa: E402
from bench_quality import minilm_embedder  # noqa: E402

DATA = pathlib.Path(os.environ.get("LABELFLEET_DATA", REPO.parent / "shared" / "data")) / "cranfield"
KS = (3, 5, 10)
ALPHAS = (0.5, 1.0)


def main() -> None:
    out, which = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "odd"
    embed = minilm_embedder()

    docs, queries, _ = cranfield_pool.load(DATA)
    ids = list(docs)
    index = {d: i for i, d in enumerate(ids)}
    doc_vecs = embed([docs[d]["body"] for d in ids])
    qrels = {}
    for line in (DATA / "qrels.txt").open():
        q, _, d, g = line.split()
        qrels[(q, d)] = int(g)
    pairs = cranfield_pool.pool(DATA, which, "top10")
    qids = sorted({p["query_id"] for p in pairs}, key=int)
    q_vecs = dict(zip(qids, embed([queries[q] for q in qids])))
    with open(out, "w") as f:
        for p in pairs:
            q, d = p["query_id"], p["doc_id"]
            qv, dv = q_vecs[q], doc_vecs[index[d]]
            corpus_cos = doc_vecs @ qv
            row = {"q": q, "d": d, "grade": qrels.get((q, d), 0), "cos": float(dv @ qv), "bm25": p["bm25"]}
            for k in KS:
                top = doc_vecs[corpus_cos.topk(k).indices]
                centroid = top.mean(0)
                for a in ALPHAS:
                    moved = torch.nn.functional.normalize(qv + a * centroid, dim=0)
                    row[f"prf_k{k}_a{a}"] = float(dv @ moved)
            f.write(json.dumps(row) + "\n")
    print(f"{len(pairs)} pairs, {len(qids)} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
