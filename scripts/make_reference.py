"""Reference outputs from Python `transformers` for the engine's parity tests.

Writes $LABELFLEET_HOME/reference/{smollm2,minilm}.safetensors and .json:
  - SmolLM2: chat prompts rendered by `apply_chat_template`, their token ids, fp32 logits at
    every position, and greedy generations (`generate(do_sample=False)`, one prompt at a time);
  - MiniLM: (query, document) pair encodings by the HF tokenizer and `BertModel` hidden states;
    sentence embeddings by `sentence_transformers.SentenceTransformer.encode` (mean pooling, unit
    length), one text at a time, of every query and document of the pairs and of a text longer
    than the encoder's 256 tokens.

usage: make_reference.py MODELS_DIR OUT_DIR
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

torch.manual_seed(0)
torch.set_num_threads(2)

CHATS = [
    [{"role": "system", "content": "You are a search quality rater."},
     {"role": "user", "content": "Query: vacation policy for contractors\n\nDocument:\nTitle: HR handbook 2024\n"
                                 "Contractors accrue no paid leave; see section 4.\n\nGrade (0-3):"}],
    [{"role": "system", "content": "You write search queries."},
     {"role": "user", "content": "Write one search query an employee would type to find this document:\n"
                                 "Quarterly revenue report, EMEA region, prepared by Jane Doe."}],
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
]
PAIRS = [
    ("boundary layer transition at high mach numbers",
     "experimental investigation of the aerodynamics of a wing in a slipstream. an experimental study of a wing "
     "in a propeller slipstream was made in order to determine the spanwise distribution of the lift increase."),
    ("who wrote the expense policy", "Expense policy v3 — author: finance team. Meals are reimbursed up to 50 EUR."),
    ("kubernetes gpu scheduling", "Déjà vu: naïve café owners schedule GPUs with Kubernetes device plugins. 🚀"),
]

# over MiniLM's 256 tokens: the sentence encoder must cut it where sentence-transformers does
LONG_TEXT = " ".join(f"section {i}: the wing's lift rises with the angle of attack." for i in range(40))


def smollm2(models: pathlib.Path, out: pathlib.Path) -> None:
    d = models / "smollm2-135m-instruct"
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    tensors, meta = {}, {"chats": CHATS, "texts": [], "generated_text": []}
    for i, chat in enumerate(CHATS):
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0]
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        if len(gen) and gen[-1].item() == tok.eos_token_id:
            gen = gen[:-1]
        tensors[f"ids_{i}"] = ids[0].contiguous()
        tensors[f"logits_{i}"] = logits.contiguous()
        tensors[f"gen_{i}"] = gen.contiguous()
        meta["texts"].append(text)
        meta["generated_text"].append(tok.decode(gen))
    save_file(tensors, out / "smollm2.safetensors")
    (out / "smollm2.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))


def minilm(models: pathlib.Path, out: pathlib.Path) -> None:
    d = models / "all-minilm-l6-v2"
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    tensors = {}
    for i, (q, doc) in enumerate(PAIRS):
        enc = tok(q, doc, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0]
        tensors[f"ids_{i}"] = enc.input_ids[0].contiguous()
        tensors[f"type_ids_{i}"] = enc.token_type_ids[0].contiguous()
        tensors[f"hidden_{i}"] = hidden.contiguous()
    sentences = [t for pair in PAIRS for t in pair] + [LONG_TEXT]
    encoder = SentenceTransformer(str(d), device="cpu")
    with torch.no_grad():
        tensors["sentences"] = torch.stack(
            [encoder.encode(s, convert_to_tensor=True, normalize_embeddings=True) for s in sentences]
        ).contiguous()
    save_file(tensors, out / "minilm.safetensors")
    meta = {"pairs": PAIRS, "sentences": sentences}
    (out / "minilm.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))


def main() -> None:
    models, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    smollm2(models, out)
    minilm(models, out)
    print(f"wrote reference outputs to {out}")


if __name__ == "__main__":
    main()
