"""Renders engine benchmark results (JSON lines) as a Markdown table, engine and baselines side
by side per model, with the speed-up of the engine over each baseline.

usage: bench_table.py RESULTS.jsonl
"""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| model | implementation | pairs | pairs/s | engine speed-up | max abs diff of grade probs vs engine | of FLOP limit |")
print("|---|---|---:|---:|---:|---:|---:|")
engine = {}
for r in rows:
    if r["impl"].startswith("labelfleet"):
        name = "minilm" if "cross-encoder" in r["model"] else "smollm2"
        r["model"] = name
        engine[name] = r
for r in rows:
    e = engine.get(r["model"])
    speed = f"{e['pairs_per_s'] / r['pairs_per_s']:.2f}x" if e and r is not e else "-"
    diff = f"{r['max_abs_diff_vs_engine']:.1e}" if "max_abs_diff_vs_engine" in r else "-"
    limit = f"{100 * r['fraction_of_flop_limit']:.0f}% ({r['achieved_gflops']:.0f} of {r['matmul_gflops']:.0f} GFLOP/s)" \
        if "fraction_of_flop_limit" in r else "-"
    print(f"| {r['model']} | {r['impl']} | {r['pairs']} | {r['pairs_per_s']:.2f} | {speed} | {diff} | {limit} |")
for name, e in engine.items():
    print(f"\n{name}: {e['mean_tokens']:.0f} tokens/pair, {e['gflop_per_pair']:.2f} GFLOP/pair executed, "
          f"FLOP limit {e['flop_limit_pairs_per_s']:.2f} pairs/s at the measured {e['matmul_gflops']:.0f} GFLOP/s matmul rate")
