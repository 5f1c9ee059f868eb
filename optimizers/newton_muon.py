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
- an expert bank (experts x m x n) keeps one statistic per expert, from the tokens routed to that
  expert only: its input module (model.RoutedInput, with `n_experts`) is called as (z, expert) once
  per expert, and K, K⁻¹ get a leading experts dimension. Each expert's K is the EWMA of its own
  per-micro-batch means over the micro-batches that routed tokens to it; an expert that has never
  received a token keeps K⁻¹ = I, exactly like a separate matrix whose layer never ran.

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
    """G K⁻¹ for K⁻¹ of shape (..., blocks, d, d): column block i of G is multiplied by K⁻¹_i; the
    leading dimensions (an expert bank's experts) match G's."""
    blocks, d = k_inv.shape[-3], k_inv.shape[-1]
    if blocks == 1:
        return grad @ k_inv[..., 0, :, :]
    g = grad.unflatten(-1, (blocks, d)).transpose(-3, -2)  # (..., blocks, m, d)
    return (g @ k_inv).transpose(-3, -2).flatten(-2)


class NewtonMuon(MatrixOptimizer):
    """Muon whose gradients are right-multiplied by per-input inverse second moments K⁻¹.

    `inputs` maps a hidden matrix to (module whose input it reads, number of diagonal blocks).
    The first matrix of each module owns the statistic: its state holds K and K_inv with shape
    (blocks, d, d) ((experts, blocks, d, d) for a bank) and the number of refreshes so far (per expert).
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
            experts = getattr(module, "n_experts", 0)
            if p.ndim != (3 if experts else 2) or (experts and p.size(0) != experts) or p.size(-1) % blocks:
                raise ValueError(f"a {tuple(p.shape)} {'bank' if experts else 'matrix'} cannot read an input of "
                                 f"{blocks} equal blocks{f' routed to {experts} experts' if experts else ''}")
            owner, owner_blocks = self.sources.setdefault(module, (p, blocks))
            if owner_blocks != blocks or owner.size(-1) != p.size(-1):
                raise ValueError("matrices sharing one input must have the same width and blocks")
            self.owner[p] = owner
        self._hooks: list = []
        self._sums: dict[torch.nn.Module, list] = {}  # module -> [sum of ZᵀZ/N, micro-batches] (per expert)

    # --- statistics ----------------------------------------------------------------------------
    def before_forward(self, step: int) -> bool:
        """On refresh steps, hook the inputs for this step's forward passes (and ask for eager mode)."""
        if not self.sources or (step + 1) % self.defaults["refresh_every"]:
            return False
        if not self._hooks:
            self._hooks = [module.register_forward_pre_hook(self._collect) for module in self.sources]
        return True

    def _stat_shape(self, module: torch.nn.Module) -> tuple[int, ...]:
        """(experts,) if routed, then (blocks, d, d)."""
        owner, blocks = self.sources[module]
        experts = getattr(module, "n_experts", 0)
        return (*((experts,) if experts else ()), blocks, owner.size(-1) // blocks, owner.size(-1) // blocks)

    @torch.no_grad()
    def _collect(self, module: torch.nn.Module, args: tuple) -> None:
        blocks = self.sources[module][1]
        z = args[0].detach().float().reshape(-1, args[0].size(-1))
        if not len(z):  # an expert this micro-batch routed no token to: no statistic, as if it never ran
            return
        z = z.unflatten(-1, (blocks, -1)).transpose(0, 1)  # (blocks, N, d)
        s = z.mT @ z / z.size(1)
        shape = self._stat_shape(module)
        sums, counts = self._sums.setdefault(module, [s.new_zeros(shape), s.new_zeros(shape[:-3])])
        at = args[1] if getattr(module, "n_experts", 0) else ...  # a routed input: (z, expert)
        sums[at] += s
        counts[at] += 1

    def _reduced_means(self) -> dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
        """Per module that saw input: the mean ZᵀZ/N over all micro-batches of all ranks (per expert,
        over those that routed tokens to it) and the number of such micro-batches."""
        modules = list(self.sources)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = self.sources[modules[0]][0].device
            parts = []
            for module in modules:
                shape = self._stat_shape(module)
                zeros = [torch.zeros(shape, device=device), torch.zeros(shape[:-3], device=device)]
                parts += [t.flatten() for t in self._sums.get(module, zeros)]
            flat = torch.cat(parts)
            dist.all_reduce(flat)
            offset = 0
            for module in modules:
                shape = self._stat_shape(module)
                n, e = torch.Size(shape).numel(), torch.Size(shape[:-3]).numel()
                self._sums[module] = [flat[offset : offset + n].view(shape), flat[offset + n : offset + n + e].view(shape[:-3])]
                offset += n + e
        return {m: (s / count.clamp(min=1)[..., None, None, None], count) for m, (s, count) in self._sums.items()
                if count.sum() > 0}

    def inverse(self, k: torch.Tensor) -> torch.Tensor:
        """(K + (gamma tr(K)/d + ridge_eps) I)⁻¹ per block by Cholesky; I where it fails."""
        eye = torch.eye(k.size(-1), dtype=k.dtype, device=k.device)
        ridge = self.defaults["newton_gamma"] * k.diagonal(dim1=-2, dim2=-1).sum(-1) / k.size(-1) + self.defaults["ridge_eps"]
        chol, info = torch.linalg.cholesky_ex(k + ridge[..., None, None] * eye)
        return torch.where((info == 0)[..., None, None], torch.cholesky_inverse(chol), eye)

    @torch.no_grad()
    def refresh(self) -> None:
        """Fold the collected statistics into K and recompute K⁻¹ (I for an expert never routed to);
        remove the hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for module, (mean, count) in self._reduced_means().items():
            state = self.state[self.sources[module][0]]
            if "K" not in state:
                d = mean.shape[-1]
                state["K"] = self.K_INIT * torch.eye(d, device=mean.device).expand(mean.shape).clone()
                state["refreshes"] = torch.zeros(count.shape, dtype=torch.long, device=mean.device)
            seen = count > 0
            k = state["K"]
            k.copy_(torch.where(seen[..., None, None, None], k.lerp(mean, 1 - self.defaults["newton_beta"]), k))
            state["refreshes"] += seen
            eye = torch.eye(k.size(-1), dtype=k.dtype, device=k.device)
            state["K_inv"] = torch.where((state["refreshes"] > 0)[..., None, None, None], self.inverse(k), eye)
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
