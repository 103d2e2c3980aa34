"""Issue 11 exploration: does the cross-encoder student learn to rank when its fresh grade head
gets a larger learning rate than the pre-trained encoder (discriminative learning rates)?

The main job's student (the bottom 3 layers of all-MiniLM-L6-v2, a fresh 4-grade head) is
trained on the main job's distillation dataset (teacher distributions only) as the trainer
does it (soft cross-entropy, AdamW, batch 16, warm-up 10% then linear decay), once with one
learning rate for everything and once with a larger one for the head, and scored on the
odd-numbered Cranfield pool by its expected grade.

usage: head_lr.py DATASET.jsonl POOL_ODD.jsonl OUT.jsonl [epochs=6] [body_lr=3e-5] [head_lrs=3e-5,1e-3]
then:  judges_metrics.py OUT.jsonl lr3e-05,lr0.001 (columns named by the head's rate)
"""
import json
import os
import pathlib
import random
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from listwise_student import expected_grades

HOME = pathlib.Path(os.environ.get("LABELFLEET_HOME", pathlib.Path.home() / ".cache" / "labelfleet"))
MINILM = HOME / "models" / "all-minilm-l6-v2"
REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "cranfield"


def doc_text(p):
    return ((p.get("title") or "") + " " + p["body"]).strip() if p.get("title") else p["body"]


def main():
    dataset, pool_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    body_lr = float(sys.argv[5]) if len(sys.argv) > 5 else 3e-5
    head_lrs = [float(x) for x in (sys.argv[6] if len(sys.argv) > 6 else "3e-5,1e-3").split(",")]
    torch.set_num_threads(os.cpu_count() or 1)
    tok = AutoTokenizer.from_pretrained(MINILM)
    data = [json.loads(l) for l in open(dataset)]
    pool = [json.loads(l) for l in open(pool_file)]
    qrels = {}
    for line in (DATA / "qrels.txt").open():
        q, _, d, g = line.split()
        qrels[(q, d)] = int(g)
    rows = [{"q": p["query_id"], "d": p["doc_id"], "grade": qrels.get((p["query_id"], p["doc_id"]), 0)} for p in pool]

    def batch(items):
        return tok([x["query"] for x in items], [doc_text(x) for x in items], padding=True,
                   truncation="only_second", max_length=256, return_tensors="pt")

    for head_lr in head_lrs:
        torch.manual_seed(0)
        random.seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=4, num_hidden_layers=3)
        head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
        body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
        opt = torch.optim.AdamW([{"params": body, "lr": body_lr}, {"params": head, "lr": head_lr}], weight_decay=0.01)
        steps = epochs * ((len(data) + 15) // 16)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / max(1, int(0.1 * steps))) * max(0.0, (steps - s) / steps))
        for ep in range(epochs):
            model.train()
            random.shuffle(data)
            for i in range(0, len(data), 16):
                b = data[i:i + 16]
                logits = model(**batch(b)).logits
                target = torch.tensor([x["distribution"] for x in b])
                loss = -(target * logits.log_softmax(-1)).sum(-1).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
            print(f"head lr {head_lr}: epoch {ep} loss {loss.item():.3f}", flush=True)
        for r, s in zip(rows, expected_grades(model, batch, pool)):
            r[f"lr{head_lr}"] = s
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
