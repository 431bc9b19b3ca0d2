"""--linears espace-fisher: ESPACE (export/linears/espace.py) with every error on the loss's
scale. C = E[s_t x_t x_t^T] weights each position t by the squared loss gradients at the
group's outputs (export/activation_stats.py, one backward per calibration window), and
dropping eigen-direction u_i costs about 1/2 lam_i sum_j share_j ||W_j u_i||^2 in loss per
position (tt_ops/rank_allocation.py). Why: with the raw C, positions with huge inputs own the
output error and one relative-error scale per group lets the rule starve layers the loss needs
(docs/results.md); here the greedy step compares estimated loss per stored parameter across
all groups, and positions the loss does not see stop deciding the directions."""

from __future__ import annotations

from tensorgpt.export.linears import register
from tensorgpt.export.linears.espace import Espace


@register
class EspaceFisher(Espace):
    name = "espace-fisher"
    help = "ESPACE with loss-gradient-weighted statistics and ranks by estimated loss per byte"
    order = 12
    loss_weighted = True

    def directions(self, weight, eig):
        from tensorgpt.tt_ops.rank_allocation import espace_directions_from_eig

        lam, u, row_weight = eig
        return espace_directions_from_eig(lam, u, weight, row_weight)
