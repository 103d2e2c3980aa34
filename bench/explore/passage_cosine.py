"""Issue 11 exploration: MiniLM cosine variants on a scored pool (zero-shot, no training).

Adds to each row of a scored pool (from pseudo_queries.py or judges_score.py):
  cos_title  the cosine of the query with title + body (the whole document as indexed),
  cos_maxp   the largest cosine of the query with any 64-word passage of the body (stride 32),
  cos_meanp  the mean of those passage cosines.

usage: passage_cosine.py SCORED.jsonl OUT.jsonl
"""
import json
import sys

import torch
from transformers import AutoModel, AutoTokenizer

torch.set_num_threads(2)
MODEL = "/root/.cache/labelfleet/models/all-minilm-l6-v2"
tk = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(MODEL).eval()
docs = {}
for line in open("/work/shared/data/cranfield/corpus.jsonl"):
    d = json.loads(line)
    docs[str(d["id"])] = d


def embed(texts):
    out = []
    for k in range(0, len(texts), 64):
        b = tk(texts[k:k + 64], padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = model(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def passages(text, size=64, stride=32):
    w = text.split()
    return [" ".join(w[i:i + size]) for i in range(0, max(len(w) - size, 0) + 1, stride)] or [text]


rows = [json.loads(l) for l in open(sys.argv[1])]
with torch.inference_mode():
    qv = embed([r["query"] for r in rows])
    whole = embed([((docs[r["d"]].get("title") or "") + ". " + docs[r["d"]]["body"]) for r in rows])
    for r, q, w in zip(rows, qv, whole):
        r["cos_title"] = float(q @ w)
    cache = {}
    for r, q in zip(rows, qv):
        if r["d"] not in cache:
            cache[r["d"]] = embed(passages(docs[r["d"]]["body"]))
        s = cache[r["d"]] @ q
        r["cos_maxp"] = float(s.max())
        r["cos_meanp"] = float(s.mean())
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
