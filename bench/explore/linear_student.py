"""Issue 11 exploration: a linear bag-of-pieces student regressed onto the teacher's encoder.

The static vectors of `static_student.py` rank below chance on the odd pool. Here they are the
prior of a ridge regression that makes the weighted mean of a text's piece vectors match
all-MiniLM-L6-v2's sentence embedding of that text, fitted on the corpus being labeled (each
body, each title, and each body's sentences): nothing human, no queries. Solved in closed
form over the pieces the corpus uses:
    T = T0 + D,  D = argmin ||X (T0 + D) - E||^2 + lambda ||D||^2
X the texts' idf-weighted piece frequencies (rows summing to 1), E the encoder's unit
embeddings, T0 the static table scaled by a least-squares factor. Grading a pair is then a
look-up, a sum and a dot product. Scored as the teacher is: cosine, and cosine after
pseudo-relevance feedback over the corpus (k 5, alpha 1.0). Also written: `full` (the encoder's
own vectors on both sides, the teacher's order) and, for each table, `..._fullq` (an asymmetric
student: the encoder embeds the queries, the table the documents and the feedback's corpus).

usage: linear_student.py POOL.json OUT.jsonl [lambdas=0.01,0.1,1]   (needs static_table.pt of
static_student.py in the working folder)
then:  judges_metrics.py OUT.jsonl lin0.1,lin0.1_prf,...
"""
import json
import os
import pathlib
import re
import sys
import time

import torch
from transformers import AutoTokenizer

from static_student import load_pool, score, weighted_mean

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
MINILM = HOME / "models" / "all-minilm-l6-v2"
REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench_quality import minilm_embedder  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "cranfield"
normalize = torch.nn.functional.normalize


def corpus_docs():
    """The Cranfield documents that have a body, in corpus order."""
    return [d for d in map(json.loads, (DATA / "corpus.jsonl").open()) if (d.get("body") or "").strip()]


def corpus_texts(docs):
    """The texts of the fit (each body, then each title, then each body's sentences of 5 words
    or more) and the index of the document each comes from."""
    texts, owner = [], []
    for i, d in enumerate(docs):
        texts.append(d["body"]); owner.append(i)
    for i, d in enumerate(docs):
        if (d.get("title") or "").strip():
            texts.append(d["title"]); owner.append(i)
    for i, d in enumerate(docs):
        for s in re.split(r"(?<=[.;])\s+", d["body"]):
            if len(s.split()) >= 5:
                texts.append(s); owner.append(i)
    return texts, owner


def scaled_prior(static, used, x, emb):
    """The static vectors of the used pieces, scaled by the least-squares factor that best maps
    the texts' weighted means onto their embeddings; and that factor."""
    prior = static[used].double()
    scale = float(((x @ prior) * emb.double()).sum() / ((x @ prior) ** 2).sum())
    return prior * scale, scale


def piece_matrix(tok, texts, n_docs):
    """Each text's word pieces; their idf over the first `n_docs` texts (the bodies); the pieces
    the texts use; and each text's idf-weighted piece frequencies over those, rows summing to 1."""
    pieces = [tok(t, add_special_tokens=False, truncation=True, max_length=256)["input_ids"] for t in texts]
    df = torch.zeros(tok.vocab_size)
    for p in pieces[:n_docs]:
        df[list(set(p))] += 1
    idf = torch.log((n_docs + 1) / (df + 1)) + 1.0
    used = sorted({i for p in pieces for i in p})
    col = {v: j for j, v in enumerate(used)}
    x = torch.zeros(len(texts), len(used), dtype=torch.float64)
    for r, p in enumerate(pieces):
        for i in p:
            x[r, col[i]] += idf[i]
    return pieces, idf, used, x / x.sum(1, keepdim=True)


def main():
    pool_file, out = sys.argv[1], sys.argv[2]
    lambdas = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0.01,0.1,1").split(",")]
    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(MINILM)
    static = normalize(torch.load("static_table.pt")[0], dim=1)

    docs = corpus_docs()
    texts, _ = corpus_texts(docs)
    t0 = time.time()
    cached = pathlib.Path("linear_targets.pt")
    emb = torch.load(cached) if cached.exists() else minilm_embedder()(texts)
    torch.save(emb, cached)
    print(f"{len(texts)} texts embedded in {time.time() - t0:.1f} s", flush=True)

    pieces, idf, used, x = piece_matrix(tok, texts, len(docs))
    prior, scale = scaled_prior(static, used, x, emb)
    residual = emb.double() - x @ prior
    gram = x.T @ x
    rhs = x.T @ residual

    queries, rows, by_query = load_pool(pool_file)
    index = {d["id"]: i for i, d in enumerate(docs)}
    # the teacher's own vectors, for the reference (`full`) and the asymmetric student (`_fullq`):
    # the encoder embeds each query (short, once per query), the linear table every document
    full_q = dict(zip(queries, minilm_embedder()(list(queries.values()))))
    score("full", full_q, emb[:len(docs)].float(), index, by_query)
    for lam in [None] + lambdas:
        table = static * scale
        if lam is not None:
            d = torch.linalg.solve(gram + lam * torch.eye(len(used), dtype=torch.float64), rhs)
            table = table.clone()
            table[used] = (prior + d).float()
            fit = ((x @ (prior + d) - emb.double()) ** 2).sum(1).mean()
            print(f"lambda {lam}: mean squared residual {float(fit):.4f}")
        corpus = torch.stack([weighted_mean(table, idf, p) for p in pieces[:len(docs)]])
        q_vecs = {q: weighted_mean(table, idf, tok(t, add_special_tokens=False)["input_ids"])
                  for q, t in queries.items()}
        name = "static" if lam is None else f"lin{lam:g}"
        score(name, q_vecs, corpus, index, by_query)
        score(name + "_fullq", full_q, corpus, index, by_query)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
