"""Issue 11 exploration: a student fast enough for the issue's 17x, made from the teacher's own
encoder as static token vectors (Model2Vec-style, Tulkens & van Dongen 2024).

Every word piece of all-MiniLM-L6-v2's vocabulary is run through the full 6-layer encoder
alone (`[CLS] piece [SEP]`), and its output vector at the piece's position (`piece`) or the mean
of the three positions (`mean`) is kept: tables of 30,522 x 384. A text's vector is the
idf-weighted mean of its pieces' vectors (idf over the corpus being labeled), optionally
centred on the corpus's mean vector, so grading a pair is a table look-up and a dot product,
with no transformer at all. Scored like the teacher: cosine, and cosine to the query after
pseudo-relevance feedback over the corpus (k 5, alpha 1.0, the teacher's setting, `_prf`).
Nothing human is read here except by judges_metrics.py.

usage: static_student.py POOL.json OUT.jsonl   (writes the tables to ./static_table.pt)
then:  judges_metrics.py OUT.jsonl piece_raw,piece_raw_prf,mean_centered_prf
"""
import json
import os
import pathlib
import sys
import time

import torch
from transformers import AutoModel, AutoTokenizer

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
MINILM = HOME / "models" / "all-minilm-l6-v2"
REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "cranfield"
normalize = torch.nn.functional.normalize


def static_table(tok, model):
    """The encoder's output vector of every vocabulary piece, alone between [CLS] and [SEP]."""
    n = tok.vocab_size
    rows = []
    with torch.inference_mode():
        for start in range(0, n, 1024):
            ids = torch.arange(start, min(n, start + 1024))
            batch = torch.stack([torch.full_like(ids, tok.cls_token_id), ids,
                                 torch.full_like(ids, tok.sep_token_id)], 1)
            out = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            rows.append(torch.stack([out[:, 1], out.mean(1)]))
    return torch.cat(rows, 1)


def weighted_mean(table, idf, pieces):
    """A text's vector: the idf-weighted mean of its pieces' vectors, unit length."""
    ids = torch.tensor(pieces, dtype=torch.long)
    w = idf[ids]
    return normalize((table[ids] * w[:, None]).sum(0) / w.sum(), dim=0)


def load_pool(pool_file):
    """The pool's queries (id -> text) and its rows grouped by query id."""
    pool = json.load(open(pool_file))
    rows = [{"q": p["q"], "d": p["d"], "grade": p["grade"]} for p in pool]
    by_query = {}
    for r in rows:
        by_query.setdefault(r["q"], []).append(r)
    return {p["q"]: p["query"] for p in pool}, rows, by_query


def score(name, q_vecs, corpus, index, by_query):
    """Each row's cosine (`name`) and its cosine after feedback from the top 5 (`name_prf`)."""
    for q, v in q_vecs.items():
        top = (corpus @ v).topk(5).indices
        expanded = normalize(v + corpus[top].mean(0), dim=0)
        for r in by_query[q]:
            d = corpus[index[r["d"]]]
            r[name] = float(d @ v)
            r[name + "_prf"] = float(d @ expanded)


def main():
    pool_file, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(MINILM)
    model = AutoModel.from_pretrained(MINILM).eval()
    t0 = time.time()
    cache = pathlib.Path("static_table.pt")
    tables = torch.load(cache) if cache.exists() else static_table(tok, model)
    torch.save(tables, cache)
    print(f"static tables {tuple(tables.shape)} in {time.time() - t0:.1f} s", flush=True)

    docs = [d for d in map(json.loads, (DATA / "corpus.jsonl").open()) if (d.get("body") or "").strip()]
    doc_ids = [d["id"] for d in docs]
    doc_pieces = [tok(d["body"], add_special_tokens=False, truncation=True, max_length=256)["input_ids"] for d in docs]
    df = torch.zeros(tok.vocab_size)
    for p in doc_pieces:
        df[list(set(p))] += 1
    idf = torch.log((len(docs) + 1) / (df + 1)) + 1.0

    queries, rows, by_query = load_pool(pool_file)
    index = {d: i for i, d in enumerate(doc_ids)}
    for pooling, table in zip(("piece", "mean"), tables):
        for centered in (False, True):
            t0 = time.time()
            corpus = torch.stack([weighted_mean(table, idf, p) for p in doc_pieces])
            q_vecs = {q: weighted_mean(table, idf, tok(t, add_special_tokens=False)["input_ids"])
                      for q, t in queries.items()}
            if centered:
                mean = corpus.mean(0)
                corpus = normalize(corpus - mean, dim=1)
                q_vecs = {q: normalize(v - mean, dim=0) for q, v in q_vecs.items()}
            name = f"{pooling}_{'centered' if centered else 'raw'}"
            score(name, q_vecs, corpus, index, by_query)
            print(f"{name}: corpus and {len(queries)} queries embedded, pool scored in {time.time() - t0:.1f} s")
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
