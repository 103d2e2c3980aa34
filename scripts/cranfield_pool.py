"""Writes the Cranfield evaluation pool of the documented rule as labelfleet pairs JSONL: for
every query, its judged documents plus the top-10 BM25 documents that are not judged (which the
evaluation counts as grade 0). Text only: grades stay in qrels.txt (evaluation only, never
training). BM25 (k1 1.2, b 0.75) over title, body and author, in Python.

Pair ids are `q{qid}-d{docid}`; each pair also carries `query_id` and `doc_id`.

usage: cranfield_pool.py DATA_DIR OUT.jsonl [all|odd|even]
"""
import collections
import json
import math
import pathlib
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

    def ranking(self, query: str) -> list[str]:
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
        return sorted(self.ids, key=lambda i: (-scores[i], int(i)))


def main() -> None:
    data, out = pathlib.Path(sys.argv[1]) / "cranfield", pathlib.Path(sys.argv[2])
    which = sys.argv[3] if len(sys.argv) > 3 else "all"
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
    bm25 = Bm25(docs)
    pairs = 0
    with out.open("w") as f:
        for qid in sorted(judged, key=int):
            if which != "all" and (int(qid) % 2 == 1) != (which == "odd"):
                continue
            pool = sorted(d for d in judged[qid] if d in docs)
            pool += [d for d in bm25.ranking(queries[qid]) if d not in judged[qid]][:UNJUDGED_PER_QUERY]
            for did in pool:
                d = docs[did]
                meta = {k: d[k] for k in ("author", "source") if d.get(k)}
                f.write(json.dumps({"id": f"q{qid}-d{did}", "query_id": qid, "doc_id": did,
                                    "query": queries[qid], "title": d.get("title"), "body": d["body"],
                                    "metadata": meta}) + "\n")
                pairs += 1
    print(f"{pairs} pairs", file=sys.stderr)


if __name__ == "__main__":
    main()
