"""The layer check's PyTorch table and untied head, without a float32 copy of either (issue 17).

With an untied head the check's model reads the embedding table only to look up its tokens
(the 16 prompt ids and the 8 greedy ones), so PyTorch gets only those rows, made when a
forward first needs them: `RowsOnDemand` keeps a compact table of the rows seen so far and
maps the ids onto it. The head multiplies the hidden states by the checkpoint's head read in
chunks of rows at every forward (`ChunkedHead`: float32 arithmetic on the stored values,
widened exactly, as `from_pretrained(dtype=float32)` would hold them). For a 7B shape that is
the 2.18 GB table and 2.18 GB head the check's PyTorch side no longer holds
(docs/results.md, "Export in bounded memory").

A tied head needs every row for its logits: there the whole table is held once, as float32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

CHUNK_BYTES = 64 << 20  # float32 bytes of head rows per chunk


class RowsOnDemand:
    """A forward pre-hook for the model's embedding module: its weight becomes the rows of the
    ids seen so far (`row(id)` -> (D,) float32 makes a new one), and the ids are mapped onto
    them. The module's own forward then runs (a scaled embedding keeps its scale)."""

    def __init__(self, module: nn.Embedding, row: Callable[[int], np.ndarray]) -> None:
        self.row = row
        self.index: dict[int, int] = {}
        dim = module.weight.shape[1]
        module.weight = nn.Parameter(torch.empty(0, dim), requires_grad=False)
        module.padding_idx = None  # only gradients use it; a compact table may be shorter
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module: nn.Embedding, args: tuple):
        ids = args[0]
        new = [i for i in dict.fromkeys(ids.reshape(-1).tolist()) if i not in self.index]
        if new:
            rows = torch.from_numpy(np.stack([self.row(i) for i in new]).astype(np.float32))
            for i in new:
                self.index[i] = len(self.index)
            weight = torch.cat([module.weight.data, rows])
            module.weight = nn.Parameter(weight, requires_grad=False)
        mapped = torch.tensor([self.index[i] for i in ids.reshape(-1).tolist()], dtype=ids.dtype)
        return (mapped.reshape(ids.shape), *args[1:])


class ChunkedHead(nn.Module):
    """logits = hidden @ W.T (+ bias), W (V, D) read as `read(start, stop)` -> rows
    start..stop-1 float32, chunk by chunk at each forward: no (V, D) array is held."""

    def __init__(
        self,
        read: Callable[[int, int], np.ndarray],
        vocab: int,
        dim: int,
        bias: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.read, self.vocab = read, vocab
        self.chunk = max(1, CHUNK_BYTES // (4 * dim))
        self.bias = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = torch.empty((*hidden.shape[:-1], self.vocab), dtype=torch.float32)
        for start in range(0, self.vocab, self.chunk):
            stop = min(start + self.chunk, self.vocab)
            weight = torch.from_numpy(self.read(start, stop))
            out[..., start:stop] = nn.functional.linear(hidden, weight)
        return out if self.bias is None else out + self.bias
