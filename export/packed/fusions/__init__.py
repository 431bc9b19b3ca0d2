"""The fused-kernel passes of `--runtime packed`, in order, and what each did (manifest
`fusions`). One transformation per file:

    export/packed/fusions/gqa.py             attention -> RotaryEmbedding + GroupQueryAttention
    export/packed/fusions/rms_norm.py        RMSNorm -> SimplifiedLayerNormalization
    export/packed/fusions/skip_rms_norm.py   residual Add + norm -> SkipSimplifiedLayerNormalization

Every pass leaves the graph unchanged where its rule or pattern does not apply; the export's
parity check (export/packed/verify.py) verifies the fused file against PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from tensorgpt.export.packed.fusions.gqa import fuse_attention, gqa_blocker
from tensorgpt.export.packed.fusions.rms_norm import fuse_rms_norm
from tensorgpt.export.packed.fusions.skip_rms_norm import fuse_skip_rms_norm

FUSED_OPS = (
    "GroupQueryAttention",
    "RotaryEmbedding",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
)


def apply_fusions(model: onnx.ModelProto, adapter, log: Callable[[str], None]) -> dict:
    """Run the passes on the packed body graph (in place); returns the manifest record."""
    blocker = gqa_blocker(adapter)
    fuse_attention(model, adapter)
    fuse_rms_norm(model)
    fuse_skip_rms_norm(model)
    # fused nodes in the final graph (the skip pass turns plain fused norms into skip ones)
    record = {op: sum(n.op_type == op for n in model.graph.node) for op in FUSED_OPS}
    if blocker is not None:
        record["attention_unfused"] = blocker
    counts = ", ".join(f"{v} {k}" for k, v in record.items() if isinstance(v, int))
    log(f"fused kernels: {counts}" + (f" (attention unfused: {blocker})" if blocker else ""))
    return record
