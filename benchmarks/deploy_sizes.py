"""What a device receives, like with like: our export folders against a GGUF file.

    python benchmarks/deploy_sizes.py out/main/none out/main/tc2.2+q4 [--gguf FILE] [--json]

For each export folder: the whole folder (model.onnx, decode.onnx + body.onnx, tokenizer,
manifest: what `scp -r` copies) and model.onnx (+ .data) alone. For the GGUF file (default: the
one the offline default model ships in, which llama.cpp runs): the whole file, which carries
its tokenizer and metadata, and its tensor bytes alone. Sizes in MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from tensorgpt.common.files import folder_bytes, model_file_bytes
from tensorgpt.export.load import OFFLINE_DEFAULTS


def default_gguf() -> Path | None:
    module, name, _requirement = OFFLINE_DEFAULTS["smollm2-135m"]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / name


def gguf_sizes(path: Path) -> dict:
    import gguf  # in the export extra

    reader = gguf.GGUFReader(str(path))
    return {
        "file_bytes": path.stat().st_size,
        "tensor_bytes": sum(int(t.n_bytes) for t in reader.tensors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders written by tensorgpt export")
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: smollm2-135m's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = {
        str(f): {"folder_bytes": folder_bytes(f), "model_bytes": model_file_bytes(f)}
        for f in args.folders
    }
    gguf_path = args.gguf or default_gguf()
    if gguf_path is not None and gguf_path.is_file():
        rows[str(gguf_path)] = gguf_sizes(gguf_path)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for name, r in rows.items():
        if "folder_bytes" in r:
            print(
                f"{name}: whole folder {r['folder_bytes'] / 1e6:.1f} MB, "
                f"model.onnx {r['model_bytes'] / 1e6:.1f} MB"
            )
        else:
            print(
                f"{name}: whole file {r['file_bytes'] / 1e6:.1f} MB (tokenizer and metadata "
                f"included), tensors {r['tensor_bytes'] / 1e6:.1f} MB"
            )


if __name__ == "__main__":
    main()
