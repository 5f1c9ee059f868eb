"""Muon²-F (Liu et al., arXiv 2604.09967): Muon² with an Adafactor-style factored second moment.

    R <- beta2 R + (1 - beta2) · row sums of G ⊙ G       (m x 1)
    C <- beta2 C + (1 - beta2) · column sums of G ⊙ G    (1 x n)
    V ≈ R C / max(sum(C), eps)

The statistics are sums, not means; the rank-1 reconstruction R_i C_j / sum(C) rescales them to
per-element values. State: momentum plus m + n values per matrix, instead of Muon²'s 2x.
Everything else is Muon² (optimizers/muon2.py), including 3 NS steps by default; microsoft/dion's
Muon2F is reproduced by configuration in tests/test_optimizer_fixtures.py.
"""

import torch

from optimizers._matrix import build_matrix_with_aux, muon_kwargs
from optimizers.muon2 import DEFAULTS as MUON2_DEFAULTS
from optimizers.muon2 import TRACK_DEFAULTS as MUON2_TRACK_DEFAULTS
from optimizers.muon2 import Muon2

DEFAULTS = dict(MUON2_DEFAULTS)
TRACK_DEFAULTS: dict = {track: dict(hp) for track, hp in MUON2_TRACK_DEFAULTS.items()}


class Muon2F(Muon2):
    """Muon² whose second moment is the rank-1 product of row and column statistics."""

    def second_moment(self, grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        if "variance_row" not in state:
            state["variance_row"] = grad.new_zeros((*grad.shape[:-1], 1))
            state["variance_col"] = grad.new_zeros((*grad.shape[:-2], 1, grad.size(-1)))
        beta2, sq = group["beta2"], grad.square()
        row = state["variance_row"].mul_(beta2).add_(sq.sum(-1, keepdim=True), alpha=1 - beta2)
        col = state["variance_col"].mul_(beta2).add_(sq.sum(-2, keepdim=True), alpha=1 - beta2)
        return row * col / col.sum(-1, keepdim=True).clamp(min=group["eps"])


def build(params, hp, model):
    matrix = Muon2F(params["matrix"], beta2=hp["beta2"], eps=hp["eps"], **muon_kwargs(hp)) if params["matrix"] else None
    return build_matrix_with_aux(matrix, params, hp)
