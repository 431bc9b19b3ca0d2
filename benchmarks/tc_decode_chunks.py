"""The transform code's chunked decode and metrics against the whole-coefficient arithmetic,
bit for bit, on a real table (issue 17).

    python benchmarks/tc_decode_chunks.py [--model smollm2-135m] [--calib-text VALID]

Fits the `--stream` tc code of the model's table (no model run: the text's token counts at
2.2 bits, or without a text the tokenizer's prior at 5.33 bits, as export/methods/tc.py
calibrate_without_model), then decodes it twice: as the decode before issue 17 did (every
(V, K) coefficient at once, then the product in chunks of rows) and chunk by chunk from the
codes (`TransformCodedTable.decode`, `decode_rows`); prints whether the tables and the
reconstruction metrics (tt_ops/metrics.py) are identical.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def whole_coefficient_decode(enc) -> np.ndarray:
    """The decode before issue 17: all (V, K) coefficients, then chunks of the product."""
    from tensorgpt.tt_ops.transform_code import DECODE_CHUNK_ROWS

    y = enc.coefficients()
    out = np.empty((enc.vocab_size, enc.dim), np.float32)
    basis, means = enc.basis.astype(np.float32), enc.means.astype(np.float32)
    cid = enc.class_ids.astype(np.int64)
    for s in range(0, len(y), DECODE_CHUNK_ROWS):
        part = out[s : s + DECODE_CHUNK_ROWS]
        np.matmul(y[s : s + DECODE_CHUNK_ROWS], basis, out=part)
        part += means[cid[s : s + DECODE_CHUNK_ROWS]]
    return out


def main() -> None:
    from tensorgpt.common.files import read_text
    from tensorgpt.export.load import load
    from tensorgpt.export.methods.tc import (
        DEFAULT_BITS,
        DEFAULT_BITS_ANY_DOMAIN,
        calibrate_without_model,
    )
    from tensorgpt.tt_ops.metrics import table_metrics
    from tensorgpt.tt_ops.transform_fit import fit_transform_code

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--calib-text", help="a text of the domain (default: none, any domain)")
    args = ap.parse_args()
    loaded = load(args.model)
    table = loaded.model.get_input_embeddings().weight.detach().float().numpy().copy()
    tokenizer = loaded.tokenizer
    del loaded
    text = None if args.calib_text is None else read_text(args.calib_text, "--calib-text")
    bits = DEFAULT_BITS if text is not None else DEFAULT_BITS_ANY_DOMAIN
    started = time.perf_counter()
    weights, metric, _ = calibrate_without_model(tokenizer, table.shape[0], text, False)
    enc = fit_transform_code(table, bits_per_weight=bits, token_counts=weights, sensitivity=metric)
    old = whole_coefficient_decode(enc)
    same_table = np.array_equal(old, enc.decode())
    same_metrics = table_metrics(table, old) == table_metrics(table, enc.decode_rows)
    print(
        f"{args.model} table {table.shape}, {bits:g} bits, calib text {args.calib_text}: "
        f"chunked decode identical {same_table}, metrics identical {same_metrics} "
        f"({time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
