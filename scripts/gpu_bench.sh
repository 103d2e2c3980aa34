#!/usr/bin/env bash
# GPU throughput of the engine against Python `transformers` on the same card, in two halves:
#   scripts/gpu_bench.sh stage    (here)   builds and stages bench/gpu-bundle: the binary, the
#                                          configs and tokenizers of the three models, Cranfield
#                                          pairs (< 64 MiB in all)
#   scripts/gpu_bench.sh device   (device) runs the bench there against /opt/torch/.venv's
#                                          libtorch; results land in $OUT/gpu-results.jsonl
# Run the device half through the device tool with carry=["bench/gpu-bundle"], e.g.
#   command: bash scripts/gpu_bench.sh device
# The weights cannot be carried, so scripts/gpu_make_models.py builds each model on the device
# with random weights (seeded) from its config; the engine and transformers then load the same
# folder and grade the same token ids, and each line reports max |dp| against the engine.
# Honest for speed, meaningless for quality. Summarise with scripts/gpu_table.py.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$REPO/bench/gpu-bundle"
case "${1:-}" in
  stage)
    HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
    make -C "$REPO" build
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/smollm2" "$BUNDLE/phi35" "$BUNDLE/minilm"
    cp "$REPO/target/release/labelfleet" "$BUNDLE/"
    strip --strip-debug "$BUNDLE/labelfleet"
    for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json; do
      cp "$HOME_DIR/models/smollm2-135m-instruct/$f" "$BUNDLE/smollm2/"
      cp "$HOME_DIR/models/smollm2-135m-instruct/$f" "$BUNDLE/phi35/"
    done
    cp "$REPO/bench/configs/phi-3.5-mini-size/config.json" "$BUNDLE/phi35/config.json"
    for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
      cp "$HOME_DIR/models/all-minilm-l6-v2/$f" "$BUNDLE/minilm/"
    done
    "$HOME_DIR/venv/bin/python" "$REPO/scripts/cranfield_pairs.py" "${LABELFLEET_DATA:-$REPO/../shared/data}" "$BUNDLE/pairs.jsonl"
    du -sh "$BUNDLE"
    ;;
  device)
    TORCH_LIB="$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib | head -1)"
    export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
    OUTDIR="${OUT:-/tmp}"
    RES="$OUTDIR/gpu-results.jsonl"
    WORK="${GPU_BENCH_WORK:-/tmp/gpu-bench}"
    PAIRS="${GPU_BENCH_PAIRS:-1611}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
    GPU="$(head -1 "$OUTDIR/gpu.txt" | cut -d, -f1)"
    MODELS="${GPU_BENCH_MODELS:-minilm smollm2 phi35}"
    ROUNDS="${GPU_BENCH_ROUNDS:-3}"
    # shellcheck disable=SC2086
    python3 "$REPO/scripts/gpu_make_models.py" "$BUNDLE" "$WORK/models" cuda $MODELS
    # model : max tokens per pair : engine token budgets (tried in turn) : Python batch size :
    # most rounds (each line keeps its best round; round 1 also pays for new batch shapes)
    for spec in "minilm:512:65536,262144:128:3" "smollm2:1024:65536,262144:64:3" "phi35:1024:65536:32:2"; do
      IFS=: read -r m len budgets batch most <<< "$spec"
      rounds=$(( ROUNDS < most ? ROUNDS : most ))
      [[ " $MODELS " == *" $m "* ]] || continue
      for budget in ${budgets//,/ }; do
        timeout 300 "$BUNDLE/labelfleet" bench --model "$WORK/models/$m" --device cuda --dtype bf16 \
          --input "$BUNDLE/pairs.jsonl" --limit "$PAIRS" --token-budget "$budget" --max-len "$len" \
          --rounds "$rounds" --label "$GPU" --out "$RES" --dump "$WORK/dump-$m"
      done
      # The Python baselines, on the dumped model and token ids of the last engine run.
      timeout 300 python3 "$REPO/scripts/bench_python.py" "$WORK/dump-$m" --device cuda --batch-size "$batch" --rounds "$rounds" \
        --label "$GPU" --model-name "$m (random weights)" --impls transformers,sentence-transformers | grep '^{' | tee -a "$RES"
      rm -rf "$WORK/dump-$m"
    done
    ;;
  *) echo "usage: $0 stage|device" >&2; exit 2 ;;
esac
