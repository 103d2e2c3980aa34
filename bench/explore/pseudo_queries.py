"""Issue 11 exploration: a cross-encoder trained on pseudo-queries, with no LLM and no human data.

Each sampled document's title is taken as a query; its body is the relevant document; BM25
(the title over the bodies) gives hard negatives from ranks 1-30, plus one random body.
all-MiniLM-L6-v2 with a fresh 1-logit head is trained on these with binary cross-entropy, then
scores a pool of (query, document) pairs; the MiniLM cosine of the same pairs is written beside
it. Cranfield's human judgments are only read by judges_metrics.py, for evaluation.

usage: pseudo_queries.py POOL.json OUT.jsonl [N_DOCS] [EPOCHS]
"""
import collections
import json
import math
import random
import re
import sys
import time

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

torch.set_num_threads(2)
MODEL = "/root/.cache/labelfleet/models/all-minilm-l6-v2"
pool = json.load(open(sys.argv[1]))
out = sys.argv[2]
n_docs = int(sys.argv[3]) if len(sys.argv) > 3 else 600
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 1

docs = {}
for line in open("/work/shared/data/cranfield/corpus.jsonl"):
    d = json.loads(line)
    if (d.get("body") or "").strip():
        docs[str(d["id"])] = d
tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())
ids = list(docs)
tfs = {i: collections.Counter(tok(docs[i]["body"])) for i in ids}
lens = {i: sum(tfs[i].values()) for i in ids}
avg = sum(lens.values()) / len(ids)
df = collections.Counter()
for c in tfs.values():
    df.update(c.keys())


def bm25(q):
    qt = tok(q)
    scores = {}
    for i in ids:
        s, tf = 0.0, tfs[i]
        for t in qt:
            if t in tf:
                idf = math.log(1 + (len(ids) - df[t] + 0.5) / (df[t] + 0.5))
                s += idf * tf[t] * 2.2 / (tf[t] + 1.2 * (0.25 + 0.75 * lens[i] / avg))
        scores[i] = s
    return sorted(ids, key=lambda i: -scores[i])


rng = random.Random(7)
seeds = [i for i in ids if (docs[i].get("title") or "").strip()]
rng.shuffle(seeds)
train = []
for i in seeds[:n_docs]:
    q = docs[i]["title"].strip().lower()
    train.append((q, docs[i]["body"], 1.0))
    ranked = [d for d in bm25(q)[:30] if d != i]
    for d in rng.sample(ranked, 3) + [rng.choice(ids)]:
        if d != i:
            train.append((q, docs[d]["body"], 0.0))
print(len(train), "training pairs from", n_docs, "titles", flush=True)

tk = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=1)
opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
B = 16
steps = epochs * math.ceil(len(train) / B)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
t0 = time.time()
step = 0
for ep in range(epochs):
    rng.shuffle(train)
    model.train()
    for k in range(0, len(train), B):
        ch = train[k:k + B]
        enc = tk([c[0] for c in ch], [c[1] for c in ch], truncation="only_second", max_length=256,
                 padding=True, return_tensors="pt")
        logits = model(**enc).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([c[2] for c in ch]))
        loss.backward()
        opt.step(); sched.step(); opt.zero_grad()
        step += 1
        if step % 25 == 0:
            print(f"epoch {ep} step {step}/{steps} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)

model.eval()
enc_model = AutoModel.from_pretrained(MODEL).eval()


def embed(texts):
    b = tk(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    h = enc_model(**b).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


with torch.inference_mode(), open(out, "w") as f:
    for k in range(0, len(pool), 32):
        ch = pool[k:k + 32]
        enc = tk([p["query"] for p in ch], [docs[p["d"]]["body"] for p in ch], truncation="only_second",
                 max_length=256, padding=True, return_tensors="pt")
        ce = model(**enc).logits.squeeze(-1).tolist()
        cos = (embed([p["query"] for p in ch]) * embed([docs[p["d"]]["body"] for p in ch])).sum(-1).tolist()
        for p, s, c in zip(ch, ce, cos):
            p["pseudo_ce"] = s
            p["cos"] = c
            f.write(json.dumps(p) + "\n")
print("done", time.time() - t0, flush=True)
