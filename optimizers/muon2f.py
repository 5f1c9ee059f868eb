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

from optimizers._matrix import build_family, family_defaults
from optimizers.muon2 import Muon2


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


DEFAULTS = family_defaults(Muon2F)


def build(params, hp, model):
    return build_family(Muon2F, params, hp)
