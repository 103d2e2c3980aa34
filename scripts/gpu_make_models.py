"""Builds the GPU benchmark's models on the device from their configs, with random weights.

The weights of SmolLM2-135M (538 MB fp32), all-MiniLM-L6-v2 (90 MB) and a Phi-3.5-mini-sized
decoder (7.6 GB bf16) cannot be carried to the device (64 MiB per call), so each is initialised
there by `transformers` from its config, with a fixed seed, and saved as a model folder. The engine
and the Python baselines then load the same folder, so both compute the same function and the
benchmark can check that they agree (max |dp|). Honest for speed, meaningless for quality.

usage: gpu_make_models.py BUNDLE OUT_DIR [DEVICE [NAME...]]
  BUNDLE/<name>/ holds config.json and the tokenizer files for each of smollm2, phi35, minilm.
"""
import pathlib
import shutil
import sys
import time

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM


def make(src: pathlib.Path, dst: pathlib.Path, device: str) -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(src)
    with torch.device(device):
        if config.model_type == "bert":
            model = AutoModel.from_config(config, dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, max_shard_size="100GB")
    for f in src.iterdir():
        if f.name != "config.json":
            shutil.copy(f, dst / f.name)
    params = sum(p.numel() for p in model.parameters())
    print(f"{dst.name}: {params / 1e6:.0f}M parameters, built in {time.perf_counter() - start:.1f} s",
          flush=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    bundle, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
    for name in sys.argv[4:] or ("minilm", "smollm2", "phi35"):
        make(bundle / name, out / name, device)


if __name__ == "__main__":
    main()
