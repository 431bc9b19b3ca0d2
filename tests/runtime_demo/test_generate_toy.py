"""Generation control on the toy folder: EOS as int or list, the context limit, positions."""

from __future__ import annotations

import numpy as np
from toy_export import write_toy_export

from tensorgpt.runtime_demo.generate import (
    generate,
    generate_batch,
    left_pad,
    position_ids_from_mask,
)
from tensorgpt.runtime_demo.session import ExportedModel


def test_left_padding_and_positions() -> None:
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_mask(mask, 3).tolist() == [[0, 1, 2], [0, 0, 0]]
    grown = np.concatenate([mask, np.ones((2, 1), dtype=np.int64)], axis=1)
    assert position_ids_from_mask(grown, 1).tolist() == [[3], [1]]


def test_eos_int_list_or_none(tmp_path) -> None:
    free = list(
        generate(ExportedModel(write_toy_export(tmp_path / "none", eos_token_id=None)), [2, 3], 6)
    )
    assert len(free) == 6  # no EOS: runs to max_new_tokens
    second = free[1]
    as_list = write_toy_export(tmp_path / "list", eos_token_id=[31, second])
    result = generate_batch(ExportedModel(as_list), [[2, 3]], 6)[0]
    assert result.ids == free[:2] and result.finish_reason == "eos"
    as_int = write_toy_export(tmp_path / "int", eos_token_id=second)
    assert list(generate(ExportedModel(as_int), [2, 3], 6)) == free[:2]


def test_context_limit_stops_generation(tmp_path) -> None:
    model = ExportedModel(write_toy_export(tmp_path / "toy", eos_token_id=None))
    prompt = [2] * (model.max_positions - 2)
    result = generate_batch(model, [prompt], max_new_tokens=10)[0]
    # 30 prompt tokens + 2 fed back fill the 32 positions; the third token needs no position.
    assert len(result.ids) == 3 and result.finish_reason == "context"
