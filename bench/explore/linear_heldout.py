"""Issue 11 exploration: the asymmetric student (encoder queries, linear documents) with the
fit weighted toward whole documents, on documents inside and outside the fit.

The linear table of `linear_student.py` is refitted by weighted ridge (lambda 1e-3) with each
body's row weighted w (titles and sentences 1):
- `in_w{w}`: fitted on the whole corpus, as `linear_student.py` does, so the table can learn
  the encoder's vector of the very documents it then grades;
- `out_w{w}`: fitted on a random half of the corpus's documents (their bodies, titles and
  sentences only); only the pool rows of the other half are written, so every scored document
  is one the fit never saw.
Queries are embedded by the encoder; feedback (k 5, alpha 1.0) reads the table's vectors of
the whole corpus. `full` is the encoder on both sides (the teacher's order).

usage: linear_heldout.py POOL.json IN.jsonl OUT.jsonl   (needs static_table.pt and
linear_targets.pt of the two scripts above in the working folder)
then:  judges_metrics.py IN.jsonl in_w1_prf,in_w25_prf full_prf; the same for OUT.jsonl
"""
import json
import random
import sys

import torch
from transformers import AutoTokenizer

from linear_student import MINILM, corpus_docs, corpus_texts, minilm_embedder, piece_matrix, scaled_prior
from static_student import load_pool, score, weighted_mean

normalize = torch.nn.functional.normalize
LAMBDA = 1e-3


def main():
    pool_file, in_out, held_out = sys.argv[1], sys.argv[2], sys.argv[3]
    tok = AutoTokenizer.from_pretrained(MINILM)
    static = normalize(torch.load("static_table.pt")[0], dim=1)
    docs = corpus_docs()
    texts, owner = corpus_texts(docs)
    emb = torch.load("linear_targets.pt").double()
    assert len(emb) == len(texts), "linear_targets.pt is not of this corpus's texts"
    pieces, idf, used, x = piece_matrix(tok, texts, len(docs))
    prior, scale = scaled_prior(static, used, x, emb)

    queries, rows, by_query = load_pool(pool_file)
    index = {d["id"]: i for i, d in enumerate(docs)}
    full_q = dict(zip(queries, minilm_embedder()(list(queries.values()))))
    score("full", full_q, emb[:len(docs)].float(), index, by_query)
    random.seed(7)
    half = set(random.sample(range(len(docs)), len(docs) // 2))
    in_half = torch.tensor([o in half for o in owner], dtype=torch.float64)
    body = torch.zeros(len(texts), dtype=torch.bool)
    body[:len(docs)] = True
    for fit, mask in (("in", torch.ones(len(texts), dtype=torch.float64)), ("out", in_half)):
        for w in (1.0, 25.0):
            rw = torch.where(body, w, 1.0).double() * mask
            xw = x * rw.sqrt()[:, None]
            rhs = xw.T @ ((emb - x @ prior) * rw.sqrt()[:, None])
            delta = torch.linalg.solve(xw.T @ xw + LAMBDA * torch.eye(len(used), dtype=torch.float64), rhs)
            table = (static * scale).clone()
            table[used] = (prior + delta).float()
            residual = ((x @ (prior + delta) - emb) ** 2).sum(1)[:len(docs)]
            seen = mask[:len(docs)] > 0
            unseen = f"{float(residual[~seen].mean()):.3f}" if (~seen).any() else "-"
            print(f"{fit}_w{w:g}: bodies' mean squared residual {float(residual[seen].mean()):.3f} "
                  f"in the fit, {unseen} outside it", flush=True)
            corpus = torch.stack([weighted_mean(table, idf, p) for p in pieces[:len(docs)]])
            score(f"{fit}_w{w:g}", full_q, corpus, index, by_query)
    with open(in_out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(held_out, "w") as f:
        for r in rows:
            if index[r["d"]] not in half:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
