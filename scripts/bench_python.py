"""Python baselines for `labelfleet bench`, on the same model folder, inputs and thread count.

Reads DUMP/model (the exact checkpoint the engine ran) and DUMP/inputs.jsonl (token ids, texts
and the engine's grade distributions) and times:
  - transformers, batches in input order, padded, full logits (how the model card runs it);
  - transformers, length-sorted batches, reading only the answer position (tuned);
  - sentence-transformers CrossEncoder on the text pairs (cross-encoders only);
  - ONNX Runtime (cross-encoders only, CPU): the same checkpoint exported to ONNX, all graph
    optimizations, length-sorted batches, the same thread count; and the same ONNX model after
    ONNX Runtime's dynamic int8 quantization (`quantize_dynamic`, the int8 peer of
    `labelfleet bench --dtype int8`).
Each line also reports max |p_python - p_engine| over the grade distributions, which shows both
sides computed the same thing. Prints one JSON line per baseline.

usage: bench_python.py DUMP [--threads N] [--batch-size B] [--device cpu|cuda]
"""
import argparse
import json
import pathlib
import time

import torch


def batches(rows, order, size):
    for i in range(0, len(order), size):
        yield [order[j] for j in range(i, min(i + size, len(order)))]


def pad(seqs, value, left=False):
    t = max(len(s) for s in seqs)
    out = torch.full((len(seqs), t), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        if left:
            out[i, t - len(s):] = torch.tensor(s)
            mask[i, t - len(s):] = 1
        else:
            out[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
    return out, mask


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump", type=pathlib.Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--label", default="")
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds of each baseline, best kept")
    ap.add_argument("--model-name", default="", help="the model's name in the results")
    ap.add_argument("--impls", default="transformers,sentence-transformers,onnxruntime",
                    help="which baselines to run (comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model_dir = args.dump / "model"
    meta = json.loads((model_dir / "labelfleet.json").read_text())
    rows = [json.loads(l) for l in (args.dump / "inputs.jsonl").open()]
    engine = torch.tensor([r["distribution"] for r in rows])
    n = len(rows)

    def report(name, timed_run):
        """Times `timed_run` over `--rounds` rounds, keeps the best, and prints its line."""
        secs = []
        for _ in range(max(args.rounds, 1)):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            probs = timed_run()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            secs.append(time.perf_counter() - t)
        diff = (probs.float().cpu() - engine).abs().max().item()
        print(json.dumps({"impl": name, "label": args.label, "model": args.model_name or str(model_dir),
                          "pairs": n, "seconds": min(secs), "round_seconds": secs,
                          "pairs_per_s": n / min(secs), "threads": args.threads, "device": args.device,
                          "max_abs_diff_vs_engine": diff}), flush=True)

    if meta["kind"] == "decoder":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(dev).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        grade_ids = torch.tensor([tok.convert_tokens_to_ids(tok.tokenize(g))[0] for g in meta["grade_labels"]], device=dev)
        pad_id = tok.pad_token_id

        def run(order, tuned):
            probs = torch.zeros(n, len(grade_ids))
            for b in batches(rows, order, args.batch_size):
                ids, mask = pad([rows[i]["ids"] for i in b], pad_id, left=tuned)
                ids, mask = ids.to(dev), mask.to(dev)
                if tuned:
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                else:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                    last = mask.sum(1) - 1
                    logits = logits[torch.arange(len(b), device=dev), last]
                probs[b] = logits[:, grade_ids].float().softmax(-1).cpu()
            return probs
    else:
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(dev).eval()

        def run(order, tuned):
            probs = torch.zeros(n, model.config.num_labels)
            for b in batches(rows, order, args.batch_size):
                ids, mask = pad([rows[i]["ids"] for i in b], 0)
                types, _ = pad([rows[i]["type_ids"] for i in b], 0)
                out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), token_type_ids=types.to(dev)).logits
                probs[b] = out.float().softmax(-1).cpu()
            return probs

    input_order = list(range(n))
    by_length = sorted(input_order, key=lambda i: -len(rows[i]["ids"]))
    impls = set(args.impls.split(","))
    with torch.inference_mode():
        run(input_order[: args.batch_size], False)  # warm-up
        for name, order, tuned in [] if "transformers" not in impls else [("transformers (input order, padded)", input_order, False),
                                   ("transformers (length-sorted" + (", answer position only)" if meta["kind"] == "decoder" else ")"), by_length, True)]:
            report(name, lambda: run(order, tuned))
        if meta["kind"] != "decoder" and "sentence-transformers" in impls:
            from sentence_transformers import CrossEncoder
            ce = CrossEncoder(str(model_dir), device=args.device, max_length=max(len(r["ids"]) for r in rows))
            texts = [(r["query"], r["document"]) for r in rows]
            ce.predict(texts[: args.batch_size], batch_size=args.batch_size, activation_fn=torch.nn.Identity())
            report("sentence-transformers CrossEncoder",
                   lambda: ce.predict(texts, batch_size=args.batch_size, activation_fn=torch.nn.Identity(),
                                      convert_to_tensor=True).float().softmax(-1))
        if meta["kind"] != "decoder" and dev.type == "cpu" and "onnxruntime" in impls:
            onnx_baselines(model, rows, by_length, args, report)


ONNX_BATCH_SIZES = (4, 8, 16, 32)


def onnx_baselines(model, rows, order, args, report):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import numpy as np
    fp32_path = args.dump / "model.onnx"
    int8_path = args.dump / "model.int8.onnx"
    ids, mask = pad([rows[i]["ids"] for i in order[:2]], 0)
    types, _ = pad([rows[i]["type_ids"] for i in order[:2]], 0)
    axes = {0: "batch", 1: "seq"}
    torch.onnx.export(model, (ids, mask, types), str(fp32_path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                    "token_type_ids": axes, "logits": {0: "batch"}})
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    n = len(rows)
    for name, path in [("onnxruntime", fp32_path), ("onnxruntime int8 dynamic", int8_path)]:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

        def run(order, size):
            probs = torch.zeros(n, model.config.num_labels)
            for b in batches(rows, order, size):
                ids, mask = pad([rows[i]["ids"] for i in b], 0)
                types, _ = pad([rows[i]["type_ids"] for i in b], 0)
                out = sess.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                                            "token_type_ids": types.numpy()})[0]
                probs[b] = torch.from_numpy(np.asarray(out, dtype=np.float32)).softmax(-1)
            return probs

        # ONNX Runtime's best batching on this machine: length-sorted, and the batch size that
        # runs fastest of ONNX_BATCH_SIZES (one untimed round each picks it; smaller batches keep
        # activations in cache, so on 2 cores 4-8 beat 32).
        run(order[: args.batch_size], args.batch_size)  # warm-up
        trial = {}
        for size in ONNX_BATCH_SIZES:
            t = time.perf_counter()
            run(order, size)
            trial[size] = time.perf_counter() - t
        best = min(trial, key=trial.get)
        report(f"{name} (length-sorted, batch {best} of {'/'.join(map(str, ONNX_BATCH_SIZES))})",
               lambda: run(order, best))


if __name__ == "__main__":
    main()
