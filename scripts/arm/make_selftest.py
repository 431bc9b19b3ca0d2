"""Write the folder `probe.py selftest` runs: a small ONNX graph (token ids -> next-token logits)
and a byte-level BPE tokenizer trained on eval_text.txt. Host only (needs onnx).

    python scripts/arm/make_selftest.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).resolve().parent
VOCAB, HIDDEN = 320, 64


def build_tokenizer(text: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    return tokenizer


def build_graph(vocab: int, seed: int = 0) -> onnx.ModelProto:
    """Embedding -> tanh MLP -> head: the ops a decoder's embedding and head use."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, HIDDEN)).astype(np.float32), "E"),
        numpy_helper.from_array(
            (rng.standard_normal((HIDDEN, HIDDEN)) / 8).astype(np.float32), "W1"
        ),
        numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32) / 10, "b1"),
        numpy_helper.from_array(
            (rng.standard_normal((HIDDEN, vocab)) / 4).astype(np.float32), "W2"
        ),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["x"]),
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Tanh", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "W2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arm_selftest",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by any onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = (HERE / "eval_text.txt").read_text(encoding="utf-8")
    tokenizer = build_tokenizer(text)
    tokenizer.save(str(out / "tokenizer.json"))
    onnx.save(build_graph(tokenizer.get_vocab_size()), str(out / "model.onnx"))
    (out / "text.txt").write_text(text, encoding="utf-8")
    print(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_selftest.py OUT_DIR")
    main(sys.argv[1])
