#!/usr/bin/env bash
# GPU throughput of the engine, in two halves:
#   scripts/gpu_bench.sh stage    (here)   builds and stages bench/gpu-bundle: the binary, the
#                                          tokenizer/config folders, Cranfield pairs (< 64 MiB)
#   scripts/gpu_bench.sh device   (device) runs the bench there against /opt/torch/.venv's
#                                          libtorch; results land in $OUT/gpu-results.jsonl
# Run the device half through the device tool with carry=["bench/gpu-bundle"], e.g.
#   command: bash scripts/gpu_bench.sh device
# Models over the carry limit run with random weights of the same config (speed only).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$REPO/bench/gpu-bundle"
case "${1:-}" in
  stage)
    HOME_DIR="${LABELFLEET_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/labelfleet}"
    make -C "$REPO" build
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/smollm2" "$BUNDLE/phi35"
    cp "$REPO/target/release/labelfleet" "$BUNDLE/"
    strip --strip-debug "$BUNDLE/labelfleet"
    for f in config.json tokenizer.json tokenizer_config.json; do
      cp "$HOME_DIR/models/smollm2-135m-instruct/$f" "$BUNDLE/smollm2/"
      cp "$HOME_DIR/models/smollm2-135m-instruct/$f" "$BUNDLE/phi35/"
    done
    cp "$REPO/bench/configs/phi-3.5-mini-size/config.json" "$BUNDLE/phi35/config.json"
    "$HOME_DIR/venv/bin/python" "$REPO/scripts/cranfield_pairs.py" "${LABELFLEET_DATA:-$REPO/../shared/data}" "$BUNDLE/pairs.jsonl"
    du -sh "$BUNDLE"
    ;;
  device)
    TORCH_LIB="$(ls -d /opt/torch/.venv/lib/python3*/site-packages/torch/lib | head -1)"
    export LD_LIBRARY_PATH="$TORCH_LIB:${LD_LIBRARY_PATH:-}"
    RES="${OUT:-/tmp}/gpu-results.jsonl"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "${OUT:-/tmp}/gpu.txt"
    for spec in "smollm2:1611:8192" "phi35:1611:16384"; do
      IFS=: read -r m n budget <<< "$spec"
      "$BUNDLE/labelfleet" bench --model "$BUNDLE/$m" --random-weights --device cuda --dtype bf16 \
        --input "$BUNDLE/pairs.jsonl" --limit "$n" --token-budget "$((budget * 8))" --max-len 1024 \
        --label "$(head -1 "${OUT:-/tmp}/gpu.txt" | cut -d, -f1)" --out "$RES"
    done
    cat "$RES"
    ;;
  *) echo "usage: $0 stage|device" >&2; exit 2 ;;
esac
