"""Writes the Cranfield evaluation pool of the documented rule as labelfleet pairs JSONL: for
every query, its judged documents plus the top-10 BM25 documents that are not judged (which the
evaluation counts as grade 0). Text only: grades stay in qrels.txt (evaluation only, never
training). BM25 (k1 1.2, b 0.75) over title, body and author, in Python.

Pair ids are `q{qid}-d{docid}`; each pair also carries `query_id`, `doc_id` and the document's
BM25 score and rank. A second rule draws the grade-0 documents from BM25's ranks 1-100 instead
of its top 10 (`ranks100`).

usage: cranfield_pool.py DATA_DIR OUT.jsonl [all|odd|even] [top10|ranks100]
"""
import collections
import json
import math
import pathlib
import random
import re
import sys

UNJUDGED_PER_QUERY = 10
K1, B = 1.2, 0.75


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class Bm25:
    def __init__(self, docs: dict[str, dict]):
        self.ids = list(docs)
        self.tf = {
            i: collections.Counter(tokens(" ".join([d.get("title") or "", d["body"], d.get("author") or ""])))
            for i, d in docs.items()
        }
        self.length = {i: sum(c.values()) for i, c in self.tf.items()}
        self.avg = sum(self.length.values()) / len(self.ids)
        self.df = collections.Counter(t for c in self.tf.values() for t in c)

    def scores(self, query: str) -> dict[str, float]:
        n = len(self.ids)
        terms = tokens(query)
        scores = {}
        for i in self.ids:
            tf, s = self.tf[i], 0.0
            norm = K1 * (1 - B + B * self.length[i] / self.avg)
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    idf = math.log(1 + (n - self.df[t] + 0.5) / (self.df[t] + 0.5))
                    s += idf * f * (K1 + 1) / (f + norm)
            scores[i] = s
        return scores


def load(data: pathlib.Path):
    """Documents with text, queries and the judged documents of each query."""
    docs = {}
    for line in (data / "corpus.jsonl").open():
        d = json.loads(line)
        if (d.get("body") or "").strip():
            docs[str(d["id"])] = d
    queries = dict(l.rstrip("\n").split("\t", 1) for l in (data / "queries.tsv").open() if "\t" in l)
    judged = collections.defaultdict(set)
    for line in (data / "qrels.txt").open():
        qid, _, did, _ = line.split()
        judged[qid].add(did)
    return docs, queries, judged


def pool(data: pathlib.Path, which: str = "all", negatives: str = "top10") -> list[dict]:
    """The pool's pairs, with each document's BM25 score and rank. `which`: all, odd or even
    query numbers. `negatives`: `top10` (the documented rule: the top-10 unjudged by BM25) or
    `ranks100` (10 unjudged drawn at random from BM25's ranks 1-100, seeded by the query)."""
    docs, queries, judged = load(data)
    bm25 = Bm25(docs)
    out = []
    for qid in sorted(judged, key=int):
        if which != "all" and (int(qid) % 2 == 1) != (which == "odd"):
            continue
        scores = bm25.scores(queries[qid])
        ranking = sorted(bm25.ids, key=lambda i: (-scores[i], int(i)))
        rank = {d: r + 1 for r, d in enumerate(ranking)}
        unjudged = [d for d in ranking if d not in judged[qid]]
        if negatives == "top10":
            grade0 = unjudged[:UNJUDGED_PER_QUERY]
        else:
            top = [d for d in unjudged if rank[d] <= 100]
            grade0 = sorted(random.Random(int(qid)).sample(top, UNJUDGED_PER_QUERY), key=rank.get)
        for did in sorted(d for d in judged[qid] if d in docs) + grade0:
            d = docs[did]
            meta = {k: d[k] for k in ("author", "source") if d.get(k)}
            out.append({"id": f"q{qid}-d{did}", "query_id": qid, "doc_id": did, "query": queries[qid],
                        "title": d.get("title"), "body": d["body"], "metadata": meta,
                        "bm25": scores[did], "bm25_rank": rank[did]})
    return out


def labels_from_grades(grades: pathlib.Path) -> list[dict]:
    """`labelfleet score` output for a pool's pairs as labels `labelfleet eval` reads: the pair id
    `q{qid}-d{docid}` split into `query_id` and `doc_id`, with the grade, the expected grade
    (which orders documents) and the distribution."""
    rows = []
    for line in grades.open():
        g = json.loads(line)
        qid, did = g["id"][1:].split("-d", 1)
        rows.append({"query_id": qid, "doc_id": did, "grade": g["grade"], "expected": g["expected"],
                     "distribution": g["distribution"], "model": g["model"]})
    return rows


def main() -> None:
    data, out = pathlib.Path(sys.argv[1]) / "cranfield", pathlib.Path(sys.argv[2])
    which = sys.argv[3] if len(sys.argv) > 3 else "all"
    negatives = sys.argv[4] if len(sys.argv) > 4 else "top10"
    pairs = pool(data, which, negatives)
    with out.open("w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    print(f"{len(pairs)} pairs", file=sys.stderr)


if __name__ == "__main__":
    main()
