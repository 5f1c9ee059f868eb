"""Newton-Muon (Du & Su, arXiv 2604.01472): Muon on the gradient right-preconditioned by the
inverse second moment of the layer's inputs.

A quadratic model of the loss in the weight perturbation gives W <- W - lr msgn(G (Z Zᵀ)⁻¹),
where Z stacks the layer's inputs; plain Muon drops the right preconditioner. In practice:

- per input, K is an EWMA of ZᵀZ/N (initialised to 1e-3 I) and K⁻¹ its ridge-regularized inverse
  (initialised to I). Every `refresh_every` steps (0-based step t with (t + 1) % k == 0) the
  layer inputs are collected in float32 by forward pre-hooks that exist only during that step's
  forward passes (the optimizer's before_forward(step) returns True, so the harness runs the
  step eagerly and the hooks fire); then, inside that step, K <- beta K + (1 - beta) mean(ZᵀZ/N)
  (statistics all-reduced across ranks first) and K⁻¹ = (K + (gamma tr(K)/n + ridge_eps) I)⁻¹ by
  Cholesky, falling back to I where the factorization fails.
- every step after the first refresh, G <- G K⁻¹ before Muon's momentum; the rest is Muon.
- matrices that read one input share one statistic (q, k and v); the 4x-wide MLP
  down-projection uses 4 block-diagonal d x d statistics (model.matrix_inputs()).

Defaults beta 0.95, gamma 0.2, refresh every 32 steps (the paper's configuration 1). Both
reference code paths (track-3 record #15, the paper repository's configuration 1) are reproduced
by configuration in tests/test_optimizer_fixtures.py. Matrices without a known input (no model,
or a model without matrix_inputs) are updated by plain Muon.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from optimizers._matrix import MatrixOptimizer, build_family, family_defaults


def right_precondition(grad: torch.Tensor, k_inv: torch.Tensor) -> torch.Tensor:
    """G K⁻¹ for K⁻¹ of shape (blocks, d, d): column block i of G is multiplied by K⁻¹_i."""
    blocks, d = k_inv.shape[0], k_inv.shape[-1]
    if blocks == 1:
        return grad @ k_inv[0]
    g = grad.unflatten(-1, (blocks, d)).transpose(-3, -2)  # (blocks, m, d)
    return (g @ k_inv).transpose(-3, -2).flatten(-2)


class NewtonMuon(MatrixOptimizer):
    """Muon whose gradients are right-multiplied by per-input inverse second moments K⁻¹.

    `inputs` maps a hidden matrix to (module whose input it reads, number of diagonal blocks).
    The first matrix of each module owns the statistic: its state holds K and K_inv with shape
    (blocks, d, d) and the number of refreshes so far.
    """

    OPTIONS = {"refresh_every": 32, "newton_beta": 0.95, "newton_gamma": 0.2, "ridge_eps": 1e-8}
    K_INIT = 1e-3  # K starts at K_INIT * I (the paper's initialisation)

    def __init__(self, params, inputs: Mapping[torch.Tensor, tuple[torch.nn.Module, int]] | None = None, **hp):
        super().__init__(params, **hp)
        if self.defaults["refresh_every"] < 1:
            raise ValueError(f"refresh_every={self.defaults['refresh_every']} must be a positive number of steps")
        mine = {p for group in self.param_groups for p in group["params"]}
        self.owner: dict[torch.Tensor, torch.Tensor] = {}  # matrix -> the matrix owning its statistic
        self.sources: dict[torch.nn.Module, tuple[torch.Tensor, int]] = {}  # module -> (owner, blocks)
        for p, (module, blocks) in (inputs or {}).items():
            if p not in mine:
                raise ValueError("inputs names a tensor this optimizer does not update")
            if p.ndim != 2 or p.size(-1) % blocks:
                raise ValueError(f"a {tuple(p.shape)} matrix cannot read an input of {blocks} equal blocks")
            owner, owner_blocks = self.sources.setdefault(module, (p, blocks))
            if owner_blocks != blocks or owner.size(-1) != p.size(-1):
                raise ValueError("matrices sharing one input must have the same width and blocks")
            self.owner[p] = owner
        self._hooks: list = []
        self._sums: dict[torch.nn.Module, list] = {}  # module -> [sum of ZᵀZ/N, number of micro-batches]

    # --- statistics ----------------------------------------------------------------------------
    def before_forward(self, step: int) -> bool:
        """On refresh steps, hook the inputs for this step's forward passes (and ask for eager mode)."""
        if not self.sources or (step + 1) % self.defaults["refresh_every"]:
            return False
        if not self._hooks:
            self._hooks = [module.register_forward_pre_hook(self._collect) for module in self.sources]
        return True

    @torch.no_grad()
    def _collect(self, module: torch.nn.Module, args: tuple) -> None:
        blocks = self.sources[module][1]
        z = args[0].detach().float().reshape(-1, args[0].size(-1))
        z = z.unflatten(-1, (blocks, -1)).transpose(0, 1)  # (blocks, N, d)
        s = z.mT @ z / z.size(1)
        acc = self._sums.setdefault(module, [torch.zeros_like(s), 0])
        acc[0] += s
        acc[1] += 1

    def _reduced_means(self) -> dict[torch.nn.Module, torch.Tensor]:
        """The mean ZᵀZ/N over all micro-batches of all ranks, per module that saw input."""
        modules = list(self.sources)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = self.sources[modules[0]][0].device
            parts = []
            for module in modules:
                owner, blocks = self.sources[module]
                d = owner.size(-1) // blocks
                s, count = self._sums.get(module, [torch.zeros(blocks, d, d, device=device), 0])
                parts += [s.flatten(), torch.tensor([float(count)], device=device)]
            flat = torch.cat(parts)
            dist.all_reduce(flat)
            offset = 0
            for module in modules:
                owner, blocks = self.sources[module]
                d = owner.size(-1) // blocks
                n = blocks * d * d
                self._sums[module] = [flat[offset : offset + n].view(blocks, d, d), flat[offset + n].item()]
                offset += n + 1
        return {m: s / count for m, (s, count) in self._sums.items() if count > 0}

    def inverse(self, k: torch.Tensor) -> torch.Tensor:
        """(K + (gamma tr(K)/d + ridge_eps) I)⁻¹ per block by Cholesky; I where it fails."""
        eye = torch.eye(k.size(-1), dtype=k.dtype, device=k.device)
        ridge = self.defaults["newton_gamma"] * k.diagonal(dim1=-2, dim2=-1).sum(-1) / k.size(-1) + self.defaults["ridge_eps"]
        chol, info = torch.linalg.cholesky_ex(k + ridge[:, None, None] * eye)
        return torch.where((info == 0)[:, None, None], torch.cholesky_inverse(chol), eye)

    @torch.no_grad()
    def refresh(self) -> None:
        """Fold the collected statistics into K and recompute K⁻¹; remove the hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for module, mean in self._reduced_means().items():
            state = self.state[self.sources[module][0]]
            if "K" not in state:
                blocks, d = mean.shape[0], mean.shape[-1]
                state["K"] = self.K_INIT * torch.eye(d, device=mean.device).expand(blocks, d, d).clone()
                state["refreshes"] = 0
            state["K"].lerp_(mean, 1 - self.defaults["newton_beta"])
            state["K_inv"] = self.inverse(state["K"])
            state["refreshes"] += 1
        self._sums = {}

    # --- the Muon pipeline ---------------------------------------------------------------------
    def transform_grad(self, p, grad, state, group):
        owner = self.owner.get(p)
        if owner is None or "K_inv" not in self.state[owner]:
            return grad  # K⁻¹ = I before the first refresh
        return right_precondition(grad, self.state[owner]["K_inv"])

    def prepare_step(self) -> None:
        if self._hooks:  # a refresh step: its inputs were collected during this step's forward passes
            self.refresh()


DEFAULTS = family_defaults(NewtonMuon)


def build(params, hp, model):
    names = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
    sources = model.matrix_inputs() if hasattr(model, "matrix_inputs") else {}
    inputs = {p: sources[names[id(p)]] for p in params["matrix"] if names.get(id(p)) in sources}
    return build_family(NewtonMuon, params, hp, inputs=inputs)
