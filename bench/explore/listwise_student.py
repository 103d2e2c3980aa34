"""Issue 11 exploration: does the cross-encoder student learn to rank when it is also taught the
teacher's order within each query (ranking distillation), not only each pair's grade?

The main job's student (the bottom 3 layers of all-MiniLM-L6-v2, a fresh 4-grade head) is
trained on the main job's distillation set (`teacher_labels.jsonl`: the committee teacher's
distributions, nothing human) as the trainer does it (soft cross-entropy, AdamW 3e-5, warm-up
10% then linear decay, clipping 1.0), and with a second term on the expected grades of the
pairs of one query:
- `pointwise`: soft cross-entropy only, batches of 16 pairs drawn across queries (the trainer);
- `margin`: batches of one query's pairs, soft cross-entropy + lambda x Margin-MSE
  (Hofstaetter et al. 2020): the mean over the query's pairs (i, j) of
  ((s_i - s_j) - (t_i - t_j))^2, s and t the student's and the teacher's expected grades;
- `listnet`: one query per batch, soft cross-entropy + lambda x the cross-entropy between
  softmax(t / tau) and softmax(s / tau) over the query's documents (ListNet).
Each is scored on the odd-numbered Cranfield pool (`judges_pool.py odd`) by its expected grade.

usage: listwise_student.py TEACHER_LABELS.jsonl POOL_ODD.json OUT.jsonl [epochs=6] [variants=pointwise,margin,listnet] [lambda=1.0] [tau=0.5]
then:  judges_metrics.py OUT.jsonl pointwise,margin,listnet
"""
import collections
import json
import os
import pathlib
import random
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
MINILM = HOME / "models" / "all-minilm-l6-v2"
REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "cranfield"
GRADES = torch.arange(4, dtype=torch.float32)


def document_text(doc):
    """As `types::pair::document_text`: title and metadata lines, then the body."""
    head = f"Title: {doc['title'].strip()}\n" if (doc.get("title") or "").strip() else ""
    for key in sorted(k for k in doc if k not in ("id", "title", "body")):
        if str(doc[key]).strip():
            head += f"{key}: {str(doc[key]).strip()}\n"
    return head + doc["body"].strip()


def schedule(steps):
    warm = max(1, int(0.1 * steps + 0.999))
    return lambda s: (s + 1) / warm if s + 1 <= warm else max(0.0, (steps - s - 1) / max(1, steps - warm))


def batches(variant, data, rng):
    if variant == "pointwise":
        order = data[:]
        rng.shuffle(order)
        return [order[i:i + 16] for i in range(0, len(order), 16)]
    by_query = collections.defaultdict(list)
    for x in data:
        by_query[x["query"]].append(x)
    groups = list(by_query.values())
    rng.shuffle(groups)
    return groups


def ranking_loss(variant, s, t, lam, tau):
    if variant == "margin":
        ds = s[:, None] - s[None, :]
        dt = t[:, None] - t[None, :]
        return lam * ((ds - dt) ** 2).mean()
    if variant == "listnet":
        return -lam * ((t / tau).softmax(0) * (s / tau).log_softmax(0)).sum()
    return torch.zeros(())


def expected_grades(model, encode, items):
    """A cross-encoder's expected grade (0-3) of each item, in batches of 64."""
    model.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(items), 64):
            p = model(**encode(items[i:i + 64])).logits.softmax(-1)
            scores += (p * GRADES).sum(-1).tolist()
    return scores


def main():
    labels_file, pool_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    variants = (sys.argv[5] if len(sys.argv) > 5 else "pointwise,margin,listnet").split(",")
    lam = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0
    tau = float(sys.argv[7]) if len(sys.argv) > 7 else 0.5
    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(MINILM)
    docs = {d["id"]: d for d in map(json.loads, (DATA / "corpus.jsonl").open())}
    data = [dict(r, text=document_text(docs[r["doc_id"]])) for r in map(json.loads, open(labels_file))]
    pool = json.load(open(pool_file))
    for p in pool:
        p["text"] = document_text(docs[p["d"]])

    def encode(items):
        return tok([x["query"] for x in items], [x["text"] for x in items], padding=True,
                   truncation="only_second", max_length=256, return_tensors="pt")

    rows = [{"q": p["q"], "d": p["d"], "grade": p["grade"]} for p in pool]
    for variant in variants:
        torch.manual_seed(0)
        rng = random.Random(0)
        model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=4, num_hidden_layers=3)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
        steps = epochs * len(batches(variant, data, random.Random(0)))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(steps))
        for epoch in range(epochs):
            model.train()
            total = [0.0, 0.0]
            for b in batches(variant, data, rng):
                log_p = model(**encode(b)).logits.log_softmax(-1)
                target = torch.tensor([x["distribution"] for x in b])
                pointwise = -(target * log_p).sum(-1).mean()
                rank = ranking_loss(variant, (log_p.exp() * GRADES).sum(-1), (target * GRADES).sum(-1), lam, tau)
                opt.zero_grad()
                (pointwise + rank).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                total[0] += pointwise.item()
                total[1] += rank.item()
            print(f"{variant}: epoch {epoch} soft CE {total[0]:.2f} ranking {total[1]:.2f}", flush=True)
        for r, s in zip(rows, expected_grades(model, encode, pool)):
            r[variant] = s
        with open(out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
