"""Renders engine benchmark results (JSON lines) as a Markdown table, engine and baselines side
by side per model, with the speed-up of the engine's best line over each baseline and each
line's fraction of the FLOP limit (for a baseline: the engine's executed FLOPs per pair, which
it computes on the same inputs, at the baseline's rate).

usage: bench_table.py RESULTS.jsonl
"""
import json
import pathlib
import sys

SHORT = {"all-minilm-l6-v2": "minilm", "smollm2-135m-instruct": "smollm2"}


def short_name(r):
    """minilm / smollm2 / phi35 from an engine line's model path or a baseline's model name."""
    model = r.get("model", "")
    if r["impl"].startswith("labelfleet"):
        path = model.split(":", 1)[-1].split(" ")[0]
        name = pathlib.Path(path).name
        return SHORT.get(name, name)
    return model.split(" ")[0]


rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in rows:
    r["short"] = short_name(r)
    if r["impl"] == "labelfleet (tch)" and r["pairs_per_s"] > best.get(r["short"], {}).get("pairs_per_s", 0):
        best[r["short"]] = r
print("| model | implementation | token budget | pairs | pairs/s | engine speed-up | max abs diff of grade probs vs engine | of FLOP limit |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    e = best.get(r["short"])
    speed = f"{e['pairs_per_s'] / r['pairs_per_s']:.2f}x" if e and not r["impl"].startswith("labelfleet") else "-"
    diff = f"{r['max_abs_diff_vs_engine']:.1e}" if r.get("max_abs_diff_vs_engine") is not None else "-"
    if "fraction_of_flop_limit" in r:
        limit = f"{100 * r['fraction_of_flop_limit']:.1f}%"
    elif e:
        limit = f"{100 * e['fraction_of_flop_limit'] * r['pairs_per_s'] / e['pairs_per_s']:.1f}%"
    else:
        limit = "-"
    budget = r.get("token_budget", "-")
    print(f"| {r['short']} | {r['impl']} | {budget} | {r['pairs']} | {r['pairs_per_s']:.2f} | {speed} | {diff} | {limit} |")
for name, e in best.items():
    print(f"\n{name}: {e['mean_tokens']:.0f} tokens/pair, {e['gflop_per_pair']:.2f} GFLOP/pair executed, "
          f"FLOP limit {e['flop_limit_pairs_per_s']:.2f} pairs/s at the measured {e['matmul_gflops']:.0f} GFLOP/s matmul rate")
