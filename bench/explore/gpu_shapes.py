"""What a new batch shape costs on the GPU: first call against a repeat, per attention backend.

BERT-sized attention (12 heads of 32, bf16) with a boolean padding mask [b, 1, 1, t], as the
engine's encoder calls it, for ten new sequence lengths; and a bf16 linear layer for ten new
row counts. Prints one JSON line per case: median first-call and repeat milliseconds.

usage: gpu_shapes.py   (on a CUDA machine)
"""
import json
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t)


def attention_case(name, backends, lengths, b=128):
    try:
        attention_times(name, backends, lengths, b)
    except RuntimeError as e:
        print(json.dumps({"case": name, "error": str(e).splitlines()[0]}), flush=True)


def attention_times(name, backends, lengths, b):
    first, again = [], []
    for t in lengths:
        q = torch.randn(b, 12, t, 32, device="cuda", dtype=torch.bfloat16)
        mask = (torch.arange(t, device="cuda")[None, :] < torch.randint(1, t + 1, (b, 1), device="cuda")).view(b, 1, 1, t)

        def call():
            if backends is None:
                return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            with sdpa_kernel(backends):
                return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        first.append(timed(call))
        again.append(timed(call))
    print(json.dumps({"case": name, "first_ms": statistics.median(first), "repeat_ms": statistics.median(again),
                      "first_ms_all": [round(x, 2) for x in first]}), flush=True)


def linear_case(rows_list):
    w = torch.randn(1536, 384, device="cuda", dtype=torch.bfloat16)
    first, again = [], []
    for m in rows_list:
        x = torch.randn(m, 384, device="cuda", dtype=torch.bfloat16)
        first.append(timed(lambda: torch.nn.functional.linear(x, w)))
        again.append(timed(lambda: torch.nn.functional.linear(x, w)))
    print(json.dumps({"case": "linear bf16 384->1536, new row counts", "first_ms": statistics.median(first),
                      "repeat_ms": statistics.median(again)}), flush=True)


def main():
    print(json.dumps({"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                      "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled(),
                      "gpu": torch.cuda.get_device_name()}), flush=True)
    x = torch.randn(64, 64, device="cuda")
    timed(lambda: x @ x)
    attention_case("sdpa default", None, range(301, 311))
    attention_case("sdpa cudnn only", [SDPBackend.CUDNN_ATTENTION], range(311, 321))
    attention_case("sdpa efficient only", [SDPBackend.EFFICIENT_ATTENTION], range(321, 331))
    attention_case("sdpa math only", [SDPBackend.MATH], range(331, 341))
    attention_case("sdpa default, multiples of 16", None, range(352, 512, 16))
    linear_case(range(40001, 40011))


if __name__ == "__main__":
    main()
