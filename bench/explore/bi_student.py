"""Issue 11 exploration: a bi-encoder student, read on the odd-numbered Cranfield queries only.

The committee teacher's judge is all-MiniLM-L6-v2 with pseudo-relevance feedback and a z-score
calibration among the corpus. A cross-encoder student (a fresh head on MiniLM) learns little
from a few hundred soft labels. This tries the other shape: a smaller sentence encoder (the first
L layers of the same model), trained with no human grades on
- embedding distillation: 1 - cos(student(text), teacher(text)) over the corpus's bodies and
  titles and the synthetic queries (unlabeled text only);
- optionally, listwise distillation of the teacher's grades: per synthetic query, the KL between
  softmax(expected teacher grade / 0.5) and softmax(cos / 0.05) over its labeled documents
  (the main job's teacher_labels.jsonl);
and then scored exactly as the teacher is (feedback k 5, alpha 1.0, cosine to the expanded
query), so within a query its order is that of its cosine to q'.

usage: bi_student.py RUN_DIR OUT.jsonl [layers=3] [epochs=2] [listwise=0|1]
then:  judges_metrics.py OUT.jsonl teacher,student_untrained,student
"""
import collections
import json
import math
import os
import pathlib
import random
import sys
import time

import torch
from transformers import AutoModel, AutoTokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import cranfield_pool  # noqa: E402

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
DATA = pathlib.Path(os.environ.get("LABELFLEET_DATA", REPO.parent / "shared" / "data")) / "cranfield"
MINILM = HOME / "models" / "all-minilm-l6-v2"


def encode(model, tok, texts, grad=False, bs=32):
    out = []
    for i in range(0, len(texts), bs):
        b = tok(texts[i:i + bs], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.set_grad_enabled(grad):
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def prf_scores(doc_vecs, q_vec, k=5, alpha=1.0):
    cos = doc_vecs @ q_vec
    top = cos.topk(k).indices
    q2 = torch.nn.functional.normalize(q_vec + alpha * doc_vecs[top].mean(0), dim=-1)
    return doc_vecs @ q2


def main():
    run, out = pathlib.Path(sys.argv[1]), sys.argv[2]
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    listwise = len(sys.argv) > 5 and sys.argv[5] == "1"
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    random.seed(0)
    tok = AutoTokenizer.from_pretrained(MINILM)
    teacher = AutoModel.from_pretrained(MINILM).eval()
    student = AutoModel.from_pretrained(MINILM, num_hidden_layers=layers)

    docs, queries, _ = cranfield_pool.load(DATA)
    ids = list(docs)
    index = {d: i for i, d in enumerate(ids)}
    qfile = run / "queries.jsonl"
    synth = [json.loads(l) for l in qfile.open()] if qfile.exists() else []
    synth_text = [s["query"] for s in synth]
    texts = [docs[d]["body"] for d in ids] + [docs[d].get("title") or "" for d in ids] + synth_text
    texts = [t for t in texts if t.strip()]
    t0 = time.time()
    with torch.inference_mode():
        targets = encode(teacher, tok, texts)
    print(f"teacher embedded {len(texts)} texts in {time.time() - t0:.0f} s", flush=True)

    lists = []
    if listwise:
        by_q = collections.defaultdict(list)
        for l in (run / "teacher_labels.jsonl").open():
            r = json.loads(l)
            dist = r["distribution"] if "distribution" in r else r["grading"]["distribution"]
            by_q[r["query"]].append((r.get("doc_id") or r.get("document_id"), sum(i * p for i, p in enumerate(dist))))
        lists = [(q, v) for q, v in by_q.items() if len(v) > 1]
        print(f"listwise: {len(lists)} queries, {sum(len(v) for _, v in lists)} pairs", flush=True)

    pool = cranfield_pool.pool(DATA, "odd", "top10")
    qids = sorted({p["query_id"] for p in pool}, key=int)
    qrels = {}
    for line in (DATA / "qrels.txt").open():
        q, _, d, g = line.split()
        qrels[(q, d)] = int(g)

    def score(model, name, rows):
        model.eval()
        with torch.inference_mode():
            dv = encode(model, tok, [docs[d]["body"] for d in ids])
            qv = dict(zip(qids, encode(model, tok, [queries[q] for q in qids])))
        cache = {q: prf_scores(dv, qv[q]) for q in qids}
        for r, p in zip(rows, pool):
            r[name] = float(cache[p["query_id"]][index[p["doc_id"]]])

    rows = [{"q": p["query_id"], "d": p["doc_id"], "grade": qrels.get((p["query_id"], p["doc_id"]), 0)} for p in pool]
    score(teacher, "teacher", rows)
    score(student, "student_untrained", rows)

    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
    order = list(range(len(texts)))
    steps = epochs * math.ceil(len(order) / 32)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, 1 - s / steps))
    t0 = time.time()
    for ep in range(epochs):
        student.train()
        random.shuffle(order)
        for i in range(0, len(order), 32):
            b = order[i:i + 32]
            emb = encode(student, tok, [texts[j] for j in b], grad=True)
            loss = (1 - (emb * targets[b]).sum(-1)).mean()
            if lists:
                q, v = random.choice(lists)
                qe = encode(student, tok, [q], grad=True)[0]
                de = encode(student, tok, [docs[d]["body"] for d, _ in v if d in docs], grad=True)
                t = torch.tensor([e for d, e in v if d in docs])
                loss = loss + torch.nn.functional.kl_div(
                    torch.log_softmax(de @ qe / 0.05, -1), torch.softmax(t / 0.5, -1), reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {ep}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    score(student, "student", rows)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
