"""--linears espace-tn: ESPACE (export/linears/espace.py) with the autocorrelation of
token-normalised inputs, C = E[x x^T / ||x||^2] (one of the paper's normalised constructions):
each position counts alike, so the few positions with huge inputs (attention sinks) no longer
decide which directions are kept; the error of dropping u_i is then the mean *relative*
output error lam_i ||W u_i||^2 (each position's error over its input's squared norm)."""

from __future__ import annotations

from tensorgpt.export.linears import register
from tensorgpt.export.linears.espace import Espace


@register
class EspaceTokenNormalised(Espace):
    name = "espace-tn"
    help = "ESPACE on token-normalised inputs (every position weighted alike)"
    order = 15
    per_token = True
