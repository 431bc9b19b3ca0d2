"""--linears svd: plain truncated SVD of every weight W = U diag(s) V^T, kept as
(U_k diag(s_k))(V_k^T x): the baseline ESPACE is measured against (same budget rule, same
graph, no calibration, no shared projections)."""

from __future__ import annotations

from tensorgpt.export.linears import register
from tensorgpt.export.linears.base import LinearCompressor


@register
class TruncatedSVD(LinearCompressor):
    name = "svd"
    help = "truncated SVD of every weight (baseline; no calibration)"
    order = 20
    shared = False
    calibrated = False

    def directions(self, weight, eig):
        from tensorgpt.tt_ops.rank_allocation import svd_directions

        return svd_directions(weight)
