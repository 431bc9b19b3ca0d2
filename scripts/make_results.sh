#!/usr/bin/env bash
# Regenerates docs/results.md and docs/results.png (run from anywhere):
#
#     bash scripts/make_results.sh
#
# 1. GPT-2-small shape (the real `gpt2` config, random weights: no GPT-2 checkpoint can be
#    downloaded here), every variant of the default grid, bytes only:
#        tensorgpt sweep out/gpt2-small-random --sizes-only --out out/sweep-gpt2-sizes
# 2. SmolLM2-135M (the offline default), perplexity on the first 8192 tokens of wikitext-2
#    test, windows of 512, decode ms/token at batch 1:
#        tensorgpt sweep smollm2-135m --text ../shared/data/wikitext-2/test.txt \
#            --max-tokens 8192 --window 512 --stride 512 --out out/sweep-smollm2
#
# Resumable: a variant whose folder has a manifest with passed verification is not exported
# again, and perplexities are cached in each folder, so after an interruption a rerun only
# does what is missing. Decode speed is re-timed on every run (all variants in one run), which
# is why the SmolLM2 sweep runs last, with no export beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT=${TEXT:-../shared/data/wikitext-2/test.txt}
OUT=${OUT:-out}
mkdir -p "$OUT" docs

if [ ! -f "$OUT/gpt2-small-random/config.json" ]; then
    python -c "import sys; from pathlib import Path; sys.path.insert(0, '.');
from benchmarks.export_sizes import build_gpt2_small; build_gpt2_small(Path(sys.argv[1]))" \
        "$OUT/gpt2-small-random"
fi
# tc calibrates on the random model here: its bytes and the parity check are real, its quality
# would mean nothing (and is not measured: --sizes-only).
GPT2_GRID=none,ort-int8,int8-matmuls,int8-rows,int4-rows,int8-rows+int8-matmuls,svd-k{svd_rank},tt-r1,tt-r2,tt-r4,tt-r8,tt-r16,tt-matrix-r{ttm_rank},q4,int8-rows+q4,tc2.2+q4
tensorgpt sweep "$OUT/gpt2-small-random" --sizes-only --out "$OUT/sweep-gpt2-sizes" --only "$GPT2_GRID" \
    --title "GPT-2-small shape (random weights): bytes of every variant"

tensorgpt sweep smollm2-135m --text "$TEXT" --max-tokens 8192 --window 512 --stride 512 \
    --out "$OUT/sweep-smollm2" --plot docs/results.png \
    --title "SmolLM2-135M on wikitext-2 test: size, quality, speed"

# 3. On the device (issue 13): llama.cpp on the GGUF the weights ship in, against our fp32,
#    packed q4 and packed tc2.2+q4 files and onnxruntime's own int4 quantizer, fresh processes,
#    interleaved rounds (benchmarks/device_speed.py; needs llama-cpp-python).
DEV="$OUT/device"
mkdir -p "$DEV"
CALIB=${CALIB:-../shared/data/wikitext-2/valid.txt}
export_once() {  # folder, then export options
    local folder=$1; shift
    [ -f "$folder/manifest.json" ] || tensorgpt export smollm2-135m "$folder" "$@" --force
}
export_once "$DEV/fp32"
export_once "$DEV/q4-packed" --quantize q4 --runtime packed
export_once "$DEV/tc2.2+q4-packed" --method tc --bits-per-weight 2.2 --calib-text "$CALIB" \
    --quantize q4 --runtime packed
python benchmarks/device_speed.py --export fp32="$DEV/fp32" --export q4-packed="$DEV/q4-packed" \
    --export tc2.2+q4-packed="$DEV/tc2.2+q4-packed" --ort-int4 ort-int4="$DEV/fp32" \
    --ratio-to fp32 --json "$DEV/device_speed.json" > "$DEV/results.md"

python - "$OUT" <<'PY'
"""Assemble docs/results.md: the fixed intro, then the generated sections."""
import sys
from pathlib import Path

out = Path(sys.argv[1])
intro = """# Results: every variant side by side

Regenerate everything on this page (tables, the sentences under them, docs/results.png) with

    bash scripts/make_results.sh

which runs the two `tensorgpt sweep` commands written at its top (about an hour from scratch on
2 cores; a rerun reuses finished exports and cached perplexities and only re-times decoding).
The tables and the bullet lists under them are generated from the measured numbers
(`tensorgpt/compare.py`); the variants are the default grid in `tensorgpt/sweep.py`.

## In short

Hand-written from the SmolLM2-135M table below (produced by `bash scripts/make_results.sh`);
perplexity on the first 8192 tokens (design.md's 25.49 is on the first 2048).

- The smallest file that keeps quality: `tc2.2+q4`, 74.9 MB (7.2x smaller than fp32) at
  29.75 (+0.5%): the transformer weights as 4-bit blocks on the GGUF source's own Q4_1 grid
  (`q4`: recovered exactly, 180 MB at 29.60, +0.0%) and the table transform-coded in 2.2
  bits per entry (14.5x) with token counts and loss sensitivity from wikitext-2 *valid*.
  Without a calibration text, `int8-rows+q4` gives 95.4 MB at 29.58 (-0.1%). That `tc`
  figure holds in the calibration text's domain only: on Python source the same table costs
  +187% (see "Per domain" below); without `--calib-text`, `tc` defaults to a 6x table that
  stays within +1.25% on the worst of four domains.
- The table at 24x (`tc1.33+q4`, 71.8 MB) costs +10.6% (32.73); healing it (fitting its
  codebooks, scales, means and basis to the fp32 model's outputs on valid, 120 steps,
  `tc1.33+heal+q4`) brings it a third closer to the original model in KL but not in
  perplexity (32.94, +11.3%); docs/quality_notes.md, "Healing".
- The embedding table is 113 MB of the 538 MB fp32 file, so compressing only the table makes
  the file at most 1.27x smaller, whatever the method.
- Only int8 rows compress the table without loss (perplexity 29.58 vs 29.60, table 4x
  smaller). int4 rows cost +9.6% for a 7.1x smaller table.
- Training-free TT does not keep quality at any rank that compresses: per-token TT at the
  paper's ranks 1, 2, 4, 8 gives perplexities from about 2,000 (rank 8) to 11 million
  (rank 1). Rank 16 stays within 10% (32.47) but its table is 1.78x *larger* than the dense
  one. Shared-core TT-matrix at 6x (2.4e4) and SVD at TT rank 4's parameter budget (1.3e5)
  break the model too.
- Dynamic int8 quantization of the transformer body is where this model loses quality:
  dynamic int8 MatMuls cost +64% (ours, transformer MatMuls only) and
  +72% (onnxruntime's stock quantize_dynamic of the whole file). int8 rows plus int8 MatMuls
  is the smallest file (135 MB, 3.98x) at +64%.
- Decode speed: the int8 MatMul variants decode in about half the fp32 time; the embedding
  method changes decode time by less than the run-to-run noise (its head is rebuilt once, at
  session load). The machine is shared (its load is printed with the table): on a busy
  machine every ms/token here was up to twice as high, so compare within one table only.
- Memory while loading (`load peak MB`, measured inside the timing process): 0.77 GB for
  fp32 and 1.4-1.6 GB for the q4 variants, which decode 0.54 GB of fp32 weights at load
  with `decode.onnx` + `body.onnx`. Loading the q4 model.onnx files alone peaks at 2.1-2.7 GB.
  Run in a fresh process, `tensorgpt bench` gives 1.45 GB for `tc2.2+q4` and 1.14 GB for `q4`
  (docs/quality_notes.md, "Load-time memory").
- On the device (section below): the `--runtime packed` files hold 211-212 MiB after load
  against llama.cpp's 200 MiB on the same GGUF and answer a 128-token prompt in 0.5-0.65x its
  time, but decode at 1.27-1.39x its time per token on 1 thread (two runs, load 5-8).
- `svd-k229` takes k from the paper's parameter count for TT rank 4 (232 per token, 45.6 MB);
  the exporter stores TT rank 4's four token-independent cores once (38.1 MB as stored), so
  the SVD baseline holds 1.19x the bytes of `tt-r4`, and still breaks the model.

## Per domain (issue 19)

Hand-written; the tables below this section are on wikitext-2 test only. Four domains, first
8192 tokens each, none used for calibration: wikitext-2 test, Python source (the
interpreter's Lib/*.py), Debian's license texts, Debian's fortunes (`python -m
tensorgpt.domain_texts DIR`). In process (same weights and table decode as the export):
`python benchmarks/domain_quality.py --calib none --weights rule --bits 6.4 5.33 4` (tied)
and `... --bits 3.2 2.67 1.33 --head-only`, `... --codec int8-rows --head-only`; the `tc` rows
here calibrate without a user text (what `tc` does without `--calib-text`).

| table | ratio | wikitext-2 | python | licenses | fortunes | worst |
|---|---:|---:|---:|---:|---:|---:|
| int8 rows (head only) | 4.0 | -0.07% | +0.03% | -0.05% | -0.02% | +0.03% |
| tc 6.4 bits | 5.0 | +0.82% | +0.53% | +0.48% | +0.48% | +0.82% |
| tc 5.33 bits (default without a text) | 6.0 | +1.25% | +0.90% | +1.02% | +0.49% | +1.25% |
| tc 4 bits | 8.0 | +1.44% | +3.12% | +2.03% | +1.67% | +3.12% |
| tc 3.2 bits (head only) | 10.0 | +2.53% | +7.82% | +5.45% | +2.45% | +7.82% |
| tc 2.67 bits (head only) | 12.0 | +5.17% | +16.97% | +12.49% | +4.50% | +16.97% |
| tc 1.33 bits (head only) | 24.1 | +29.9% | +158.6% | +115.9% | +26.6% | +158.6% |
| tc 2.2 bits, `--calib-text` wikitext-2 valid (4096 tokens) | 14.5 | -0.23% | +186.8% | +138.0% | +70.9% | +186.8% |

End to end, the default without a text (`tensorgpt export smollm2-135m OUT --method tc
--quantize q4`, calibration cached, 7 min 12 s at load 5-7; then `tensorgpt compare OUT --text
DIR/wikitext2-test.txt DIR/python-source.txt DIR/licenses.txt DIR/fortunes.txt --max-tokens
8192 --window 512 --no-speed`): model.onnx 85.9 MB (85,914,033 bytes, table 18.9 MB),
perplexity 29.97 / 8.442 / 18.42 / 29.23, i.e. +1.25% / +0.91% / +1.02% / +0.49% over the
fp32 model (29.60 / 8.366 / 18.23 / 29.09; the q4 weights are the GGUF's own, so fp32 and q4
share these), worst **+1.25%** (wikitext-2): the in-process figures to 0.01 points.

### Worst-domain frontier of the default (tc + q4, no `--calib-text`, per-row logit gain)

`TENSORGPT_DATA=DATA python benchmarks/domain_quality.py --calib none --weights rule --bits 4
3.2 3.5555555555555554` and `... --bits 4.571428571428571` (2026-11-30, 16:23-17:49 UTC, load
average 8-16: four other engineers' jobs on the 2 cores). In process, tied (the decoded table
is the input embedding and the head, with the gain the export stores), first 8192 tokens per
domain, change over the fp32 perplexities above; `q4` recovers this model's GGUF weights
exactly, so these are `tc + q4`'s figures (at 6x with the bias, in process and end to end
agreed to 0.01 points). model.onnx MB: the 6x and 12x files measured end to end; 7x-10x are
the 6x file with the table's budget changed (that estimate gives the 12x file to 0.01 MB).

| table (tc + q4, gain) | ratio | bits per entry | model.onnx MB | wikitext-2 | python | licenses | fortunes | worst |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
| 6x (default; end to end) | 6.00 | 5.33 | 85.93 | +0.42% | +0.41% | +0.53% | +0.36% | **+0.53%** (licenses) |
| 7x | 7.00 | 4.57 | 83.24 | +0.75% | +0.22% | +0.65% | +0.65% | **+0.75%** (wikitext-2) |
| 8x | 8.00 | 4.00 | 81.22 | +0.59% | +1.78% | +1.30% | +1.00% | **+1.78%** (python) |
| 9x | 9.00 | 3.56 | 79.65 | +1.47% | +3.05% | +2.92% | +1.63% | **+3.05%** (python) |
| 10x | 10.00 | 3.20 | 78.39 | +2.04% | +5.04% | +5.78% | +2.70% | **+5.78%** (licenses) |
| 12x (end to end) | 12.00 | 2.67 | 76.51 | +5.26% | +11.48% | +11.80% | +4.46% | **+11.80%** (licenses) |

- **<= +1% on the worst domain: 7x** (+0.75%, wikitext-2; the default 6x: +0.53% end to end). **<= +3%: 8x** (+1.78%, Python source);
  9x misses by 0.05 points (+3.05%), 10x is at +5.8%. Wikitext-2 is worse at 7x (+0.75%)
  than at 8x (+0.59%): one fit and one evaluation each, so differences of 0.2 points are within
  what a refit moves (the regenerated calibration moved the worst domain by 0.2 before).
- Decoded head only (same runs): 8x +0.56 / +1.90 / +1.02 / +0.55%, 9x +1.13 / +3.22 / +2.04 /
  +0.90%, 10x +1.58 / +4.87 / +3.62 / +1.67%: from 9x down the input side adds up to 2 points
  (licenses at 10x: +3.62% head only, +5.78% tied), where at 6x-8x it added 0-0.5.
- Against the same rule before the bias and the gain (the first table of this section): 8x
  tied +3.12% -> +1.78% worst, 10x head only +7.82% -> +4.87%.

![file size against perplexity, SmolLM2-135M](results.png)

"""
smollm2 = (out / "sweep-smollm2" / "results.md").read_text()
gpt2 = (out / "sweep-gpt2-sizes" / "results.md").read_text()
gpt2_note = """
The GPT-2-small section has the real `gpt2` shape (50257 x 768, 12 layers, tied head) with
random weights, so only its bytes mean anything (reconstruction errors of a random table say
nothing about a trained one); these are the file sizes a GPT-2 user gets from each variant.
"""
device = (out / "device" / "results.md").read_text()
device_intro = """
## On the device: RAM, time to first token and decode speed against llama.cpp

`python benchmarks/device_speed.py --export fp32=... --export q4-packed=... --export
tc2.2+q4-packed=... --ort-int4 ort-int4=FP32DIR --ratio-to fp32` (step 3 of
scripts/make_results.sh): llama.cpp (llama-cpp-python) on the Q4_1 GGUF the weights ship in,
our files exported `--runtime packed` (weights 4-bit in RAM, fused attention and norms) and
the portable fp32 file, onnxruntime's own 4-bit quantizer on that fp32 file; one fresh process
per measurement, contenders interleaved round by round, best of 3 rounds per contender; the
ratios in brackets are to llama.cpp, the second table's to our fp32 file. RSS in MiB.

"""
# The large-vocabulary tables (benchmarks/large_vocab.py) and the linear-layer section
# (benchmarks/linear_factors.py) are written from their own runs (commands given in each):
# kept as they are.
old = Path("docs/results.md").read_text() if Path("docs/results.md").is_file() else ""
marker = "## The transformer's linear layers"
linears = "\n" + old[old.index(marker):] if marker in old else ""
vocab_marker = "### Large vocabularies at their real shapes"
end = old.index(marker) if marker in old else len(old)
large_vocab = "\n" + old[old.index(vocab_marker) : end].rstrip() + "\n" if vocab_marker in old else ""
Path("docs/results.md").write_text(
    intro + smollm2 + "\n" + device_intro + device + "\n" + gpt2 + gpt2_note + large_vocab + linears
)
print("wrote docs/results.md")
PY
