"""Window arithmetic of the strided perplexity: which tokens each window scores."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tensorgpt.runtime_demo.perplexity import windows


@given(st.integers(2, 300), st.integers(2, 64), st.data())
def test_each_token_scored_at_most_once(n: int, window: int, data: st.DataObject) -> None:
    stride = data.draw(st.integers(1, window))
    spans = windows(n, window, stride)
    scored = [t for _, end, first in spans for t in range(first, end)]
    if stride < window:  # overlapping windows: every token but the text's first is scored
        assert scored == list(range(1, n))
    else:  # no overlap: each window's first token has no context and is skipped
        assert scored == [t for t in range(1, n) if t % window]
    for begin, end, first in spans:
        assert end - begin <= window and begin < first  # a scored token has context in its window


def test_hf_guide_example() -> None:
    # 2048 tokens, window 1024, stride 512 (the guide's numbers): 3 windows.
    assert windows(2048, 1024, 512) == [(0, 1024, 1), (512, 1536, 1024), (1024, 2048, 1536)]
    # Non-overlapping windows skip each window's first token.
    assert windows(8, 4, 4) == [(0, 4, 1), (4, 8, 5)]
