"""Loads a labelfleet checkpoint in Python `transformers` and compares its grade logits with the
engine's, for the checkpoint round-trip test.

usage: check_checkpoint.py CHECKPOINT_DIR INPUTS.safetensors
INPUTS holds, per example i: ids_i, optional type_ids_i, and logits_i (the engine's grade logits).
Prints {"max_abs_diff": ..., "examples": n, "architecture": ...}; exits 1 above 1e-4.
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    ckpt, inputs = pathlib.Path(sys.argv[1]), load_file(sys.argv[2])
    meta = json.loads((ckpt / "labelfleet.json").read_text())
    config = json.loads((ckpt / "config.json").read_text())
    n = len([k for k in inputs if k.startswith("ids_")])
    worst = 0.0
    with torch.no_grad():
        if meta["kind"] == "decoder":
            model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
            tok = AutoTokenizer.from_pretrained(ckpt)
            grade_ids = [tok.convert_tokens_to_ids(tok.tokenize(g))[0] for g in meta["grade_labels"]]
            for i in range(n):
                out = model(inputs[f"ids_{i}"].unsqueeze(0)).logits[0, -1, grade_ids]
                worst = max(worst, (out - inputs[f"logits_{i}"]).abs().max().item())
        else:
            model = AutoModelForSequenceClassification.from_pretrained(ckpt, dtype=torch.float32).eval()
            for i in range(n):
                out = model(input_ids=inputs[f"ids_{i}"].unsqueeze(0),
                            token_type_ids=inputs[f"type_ids_{i}"].unsqueeze(0)).logits[0]
                worst = max(worst, (out - inputs[f"logits_{i}"]).abs().max().item())
    print(json.dumps({"max_abs_diff": worst, "examples": n, "architecture": config.get("architectures")}))
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
