"""Writes Cranfield (query, judged document) pairs as labelfleet pairs JSONL, for benchmarks.
Text only: grades are not included (Cranfield is for evaluation, never training).

usage: cranfield_pairs.py DATA_DIR OUT.jsonl
"""
import json
import pathlib
import sys


def main() -> None:
    data, out = pathlib.Path(sys.argv[1]) / "cranfield", pathlib.Path(sys.argv[2])
    docs = {}
    for line in (data / "corpus.jsonl").open():
        d = json.loads(line)
        docs[str(d["id"])] = d
    queries = dict(l.rstrip("\n").split("\t", 1) for l in (data / "queries.tsv").open() if "\t" in l)
    with out.open("w") as f:
        for line in (data / "qrels.txt").open():
            qid, _, did, _ = line.split()
            d = docs.get(did)
            if d is None or not d.get("body", "").strip():
                continue
            meta = {k: d[k] for k in ("author", "source") if d.get(k)}
            f.write(json.dumps({"id": f"q{qid}-d{did}", "query": queries[qid], "title": d.get("title"),
                                "body": d["body"], "metadata": meta}) + "\n")


if __name__ == "__main__":
    main()
