"""--linears espace: project each group's input activations onto calibrated directions
(ESPACE, arXiv 2410.05437): y = W x ~= (W P)(P^T x), P (in, k) the eigenvectors of the
input autocorrelation C = E[x x^T] that carry the most output error lam_i ||W u_i||^2
(tt_ops/rank_allocation.py). q/k/v share one P, gate/up another. Calibration: export/
activation_stats.py (--calib-text, or text the model generates, like --method tc)."""

from __future__ import annotations

from tensorgpt.export.linears import register
from tensorgpt.export.linears.base import LinearCompressor


@register
class Espace(LinearCompressor):
    name = "espace"
    help = "project each layer's input onto calibrated principal directions (ESPACE)"
    order = 10

    def directions(self, weight, eig):
        from tensorgpt.tt_ops.rank_allocation import espace_directions_from_eig

        return espace_directions_from_eig(*eig, weight)
