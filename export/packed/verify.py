"""Parity check of a `--runtime packed` file, in two steps.

1. exact grid: the file with every MatMulNBits at accuracy_level 1 (fp32 activations) must
   match PyTorch running the same Q4_1 weights and 8-bit table within the fp32 tolerance and
   pick the same greedy tokens. This proves the re-packing (codes, scales, minima
   correction, the shared table) is exact: the packed graph computes what the portable one does.
2. shipped file: its own levels restored (body and 8-bit head at 4: int8 activations, the
   8-bit head's only fast kernel; export/packed/weights.py ACCURACY_LEVEL). Logits move by design; like the int8 baselines, the report states the max
   logit difference and the cross-entropy change on the same tokens, and fails only on
   non-finite output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from tensorgpt.common.files import sha256_file
from tensorgpt.common.integrity import record_files
from tensorgpt.export.verify import verify

_EXACT_KEYS = ("max_abs_logit_diff", "greedy_match", "tolerance", "passed")


def accuracy_levels(path: Path) -> dict[str, int]:
    """{MatMulNBits node name: accuracy_level} of the file."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        node.name: next((a.i for a in node.attribute if a.name == "accuracy_level"), 0)
        for node in model.graph.node
        if node.op_type == "MatMulNBits"
    }


def set_accuracy_level(path: Path, level: int | dict[str, int]) -> None:
    """Rewrite MatMulNBits' accuracy_level in the file: one level for all nodes, or per node
    name. Weights are not touched."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        value = level if isinstance(level, int) else level[node.name]
        attr = next((a for a in node.attribute if a.name == "accuracy_level"), None)
        if attr is None:
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", value))
        else:
            attr.i = value
    onnx.save_model(model, str(path))


def verify_packed(model_path: Path, model, adapter, tokenizer) -> dict:
    shipped_levels = accuracy_levels(model_path)
    set_accuracy_level(model_path, 1)
    exact = verify(str(model_path), model, adapter, tokenizer, quantized=False)
    exact_part = {k: exact[k] for k in _EXACT_KEYS}
    set_accuracy_level(model_path, shipped_levels)
    levels = sorted(set(shipped_levels.values()))
    if levels == [1] or not exact["passed"]:
        return {**exact, "accuracy_levels": levels, "exact_grid": exact_part}
    shipped = verify(str(model_path), model, adapter, tokenizer, quantized=True)
    return {**shipped, "accuracy_levels": levels, "exact_grid": exact_part}


def write_exact_grid_copy(folder: Path, out: Path) -> bool:
    """Copy the export `folder` to `out` with every MatMulNBits at accuracy_level 1 (the
    exact-grid function of step 1 above), re-recording the manifest's file hashes so the
    runtime loads the copy. Returns False, and writes nothing, when no MatMulNBits runs above
    level 1 (a portable file, or a packed one already at level 1): its kernels have no
    precision freedom and the original is its own reference.

    scripts/arm_check.sh uses this: level 4 allows int8 activations but does not require them
    (onnxruntime computes a level-4 node in fp32 where the CPU lacks an int8 kernel for it), so
    two correct machines may differ by up to the level's own effect on the logits."""
    folder, out = Path(folder), Path(out)
    graphs = {f.name: accuracy_levels(f) for f in sorted(folder.glob("*.onnx"))}
    if not any(level > 1 for levels in graphs.values() for level in levels.values()):
        return False
    if out.exists():
        raise ValueError(f"{out} exists already; give a new folder for the exact-grid copy")
    shutil.copytree(folder, out)
    for name, levels in graphs.items():
        if levels:
            size = (out / name).stat().st_size
            set_accuracy_level(out / name, 1)
            # The split load's body.onnx reads model.onnx's bytes at recorded offsets: the
            # rewrite must keep every offset (the level is one varint byte either way).
            if (out / name).stat().st_size != size:
                raise ValueError(f"rewriting the accuracy levels changed the size of {name}")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("files"):
        manifest["files"] = record_files(out, list(manifest["files"]))
    if manifest.get("split_load"):  # the split pair belongs to this model.onnx (same offsets)
        manifest["split_load"]["model_sha256"] = sha256_file(out / "model.onnx")
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return True
