"""The runtime must install and run where torch does not exist: it may never import it.

Checked in a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torch", "transformers", "onnx")

_API_SCRIPT = """
import json, sys
from tensorgpt.runtime_demo import bench, generate, perplexity, sampling, session, tokenizer
model = session.ExportedModel(sys.argv[1], threads=1)
tok = tokenizer.load_tokenizer(model.folder)
ids = tokenizer.encode(tok, "the cat sat on the mat")
config = sampling.SamplingConfig(temperature=0.8, top_k=5, top_p=0.9, seed=1)
out = list(generate.generate(model, ids, max_new_tokens=4, sampling=config))
generate.generate_batch(model, [ids, ids[:2]], max_new_tokens=3)
perplexity.perplexity(model, ids, window=4, stride=2)
bench.bench(sys.argv[1], threads=1, prompt_tokens=4, decode_tokens=2, repeats=1)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[2:])))
"""

_CLI_SCRIPT = """
import json, sys
from tensorgpt.cli import main
folder, text = sys.argv[1], sys.argv[2]
for argv in (
    ["run", folder, "--prompt", "the cat", "--max-new-tokens", "3"],
    ["run", folder, "--prompts", text, "--max-new-tokens", "3", "--json"],
    ["eval", folder, "--text", text, "--window", "4"],
    ["bench", folder, "--prompt-tokens", "4", "--decode-tokens", "2", "--repeats", "1"],
):
    assert main(argv) == 0, argv
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[3:])))
"""


def _imported(script: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args, *FORBIDDEN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_api_never_imports_torch(toy_dir: Path) -> None:
    assert _imported(_API_SCRIPT, str(toy_dir)) == []


def test_cli_never_imports_torch(toy_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\na dog ran\n")
    assert _imported(_CLI_SCRIPT, str(toy_dir), str(text)) == []
