"""NorMuon (Li et al., arXiv 2510.05491): Muon followed by a per-neuron second-moment
normalization of the orthogonalized update.

    q = mean of O ⊙ O per neuron;  v <- beta2 v + (1 - beta2) q
    Ô = O / sqrt(v)  (per neuron),  then Ô <- Ô · ‖O‖_F / ‖Ô‖_F

Why: the orthogonalized update has equal singular values but very unequal row norms; the
normalization evens out the per-neuron step sizes (Adam-like) while keeping Muon's overall size.

Options (each matches one of the reference implementations, see tests/test_optimizer_fixtures.py):
- neuron_axis "auto": one statistic per row for tall and square matrices, per column for wide
  ones (modded-nanogpt track 3 and main track); "row": always per row (the paper, dion).
- eps_mode "clamp": O · rsqrt(max(v, eps)) and restore with max(‖Ô‖, eps) (modded-nanogpt,
  eps 1e-10); "add": O / (sqrt(v) + eps) (dion, eps 1e-8).
- stats_after_scale: the statistic is taken of the shape-scaled update (track-3 record #10).
  Only the stored statistic changes: the restored norm makes the update invariant to it.
The normalization is computed in float32. State: momentum plus one value per neuron.
"""

import torch

from optimizers._matrix import MatrixOptimizer, build_family, family_defaults


class NorMuon(MatrixOptimizer):
    """Muon whose orthogonalized update is normalized per neuron by an EMA of its second moment."""

    OPTIONS = {"beta2": 0.95, "normuon_eps": 1e-10, "eps_mode": "clamp", "neuron_axis": "auto", "stats_after_scale": False}
    CHOICES = {**MatrixOptimizer.CHOICES, "eps_mode": ("clamp", "add"), "neuron_axis": ("auto", "row")}

    def postprocess(self, p, ortho, state, group):
        o = ortho.float()
        per_row = group["neuron_axis"] == "row" or o.size(-2) >= o.size(-1)
        stats = o * self.shape_scale(p, group) if group["stats_after_scale"] else o
        q = stats.square().mean(dim=-1 if per_row else -2, keepdim=True)
        if "second_momentum" not in state:
            state["second_momentum"] = torch.zeros_like(q)
        v = state["second_momentum"].lerp_(q, 1 - group["beta2"])
        eps = group["normuon_eps"]
        normalized = o * v.clamp(min=eps).rsqrt() if group["eps_mode"] == "clamp" else o / (v.sqrt() + eps)
        norm_o = o.norm(dim=(-2, -1), keepdim=True)
        return normalized * (norm_o / normalized.norm(dim=(-2, -1), keepdim=True).clamp(min=eps))


DEFAULTS = family_defaults(NorMuon)


def build(params, hp, model):
    return build_family(NorMuon, params, hp)
