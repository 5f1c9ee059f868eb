"""Shared pieces of the Muon family: the matrix-optimizer skeleton and the auxiliary AdamW.

Every Muon variant is the same pipeline with one or two stages replaced:

    G -> transform_grad -> momentum (+ Nesterov) -> precondition -> orthogonalize -> postprocess
      -> shape scale -> decoupled weight decay -> W <- W - lr * O

The published implementations also differ in small conventions (momentum form, shape factor,
normalization epsilon, cautious decay, orthogonalization dtype). Those are options of this base
class, so a variant or a reference implementation is a configuration, not a copy of the loop.

Matrices of one shape are orthogonalized in one batched call; with several processes each rank
orthogonalizes its share of the stack and the results are all-gathered. An expert bank (experts x
m x n, nanogpt/model.py MoE) is E matrices everywhere: in that stack, in the shape factor (of m x n),
and in every variant's state (element-wise, or reduced over the last two dimensions only).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from optimizers._aux import AUX_DEFAULTS, aux_adamw
from optimizers._orthogonalize import METHODS, orthogonalize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# torch >= 2.10 renamed all_gather_into_tensor (deprecated) to all_gather_single.
ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
MOMENTUM_FORMS = ("damped", "sum")


def _keller(m: int, n: int) -> float:
    return max(1.0, m / n) ** 0.5


def _spectral(m: int, n: int) -> float:
    return (m / n) ** 0.5


def _rms(m: int, n: int) -> float:
    return max(m, n) ** 0.5


# Factor multiplying the orthogonalized update of an m x n matrix:
#   keller    max(1, m/n)^0.5   Keller's Muon, modded-nanogpt: only tall matrices grow
#   spectral  (m/n)^0.5         microsoft/dion "spectral_norm": wide matrices shrink
#   rms       max(m, n)^0.5     Newton-Muon repository: update RMS about 1
SHAPE_SCALES = {"keller": _keller, "spectral": _spectral, "rms": _rms}


# Muon's hyperparameters with the harness conventions as defaults: the one place they are written.
MATRIX_DEFAULTS = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "orthogonalizer": "ns5",
    "ortho_dtype": "auto",
    "weight_decay": 0.0,
    "momentum_warmup_steps": 0,
    "momentum_start": 0.85,
    "norm_eps": 1e-7,
    "momentum_form": "damped",
    "shape_scale": "keller",
    "shape_scale_decay": False,
    "cautious_wd": False,
}
class MatrixOptimizer(torch.optim.Optimizer):
    """Muon (Keller Jordan, 2024) with hooks and convention options for its variants.

    The defaults are the harness conventions (KellerJordan/Muon, modded-nanogpt):
    - momentum_form "damped": M <- mu M + (1 - mu) G, Nesterov mix (1 - mu) G + mu M;
      "sum" (dion, the Newton-Muon repository): M <- mu M + G, Nesterov mix G + mu M.
      For one Nesterov setting the two differ by the factor (1 - mu), which the orthogonalization
      removes up to its epsilon.
    - shape_scale "keller" (see SHAPE_SCALES); shape_scale_decay=True also scales the decay by the
      factor (the main track puts the factor on the learning rate).
    - norm_eps: the epsilon of the normalization before orthogonalization (1e-7 Keller, 1e-6 main
      track Polar Express, 1e-8 dion). The 1.02 safety factor belongs to Polar Express.
    - cautious_wd: decay only entries where the update and the weight agree in sign (O * W >= 0).
    - ortho_dtype "auto": bf16 on GPU, float32 on CPU (faster there, and exact).

    Hyperparameters are keyword arguments, defaults in MATRIX_DEFAULTS (written once); a variant
    states only what it adds or changes in OPTIONS, and its valid string values in CHOICES. They
    live in the param groups (group[key]) for every variant.
    """

    OPTIONS: dict = {}  # a variant's own hyperparameters, or the Muon defaults it changes (with their defaults)
    CHOICES: dict = {"orthogonalizer": METHODS, "ortho_dtype": ("auto", *DTYPES), "momentum_form": MOMENTUM_FORMS,
                     "shape_scale": tuple(SHAPE_SCALES)}

    @classmethod
    def hyperparameters(cls) -> dict:
        """Every hyperparameter of this optimizer with its default: Muon's, then the variant's."""
        return {**MATRIX_DEFAULTS, **cls.OPTIONS}

    def __init__(self, params, **hp):
        known = self.hyperparameters()
        unknown = sorted(set(hp) - set(known))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no hyperparameter {', '.join(unknown)}; valid: {', '.join(known)}")
        defaults = {**known, **hp, "step": 0}
        for key, valid in self.CHOICES.items():
            if defaults[key] not in valid:
                raise ValueError(f"unknown {key} {defaults[key]!r}; valid: {', '.join(valid)}")
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim < 2:
                    raise ValueError(f"{type(self).__name__} handles matrices only; got a parameter of shape {tuple(p.shape)}")

    # --- hooks for variants (identity in Muon) -------------------------------------------------
    def transform_grad(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """Before momentum (Newton-Muon's right preconditioner, MONA's acceleration term)."""
        return grad

    def precondition(self, p: torch.Tensor, update: torch.Tensor, grad: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """After momentum, before orthogonalization (Muon²'s second moment). `grad` is the raw gradient."""
        return update

    def postprocess(self, p: torch.Tensor, ortho: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        """After orthogonalization, before the shape factor (NorMuon's per-neuron normalization)."""
        return ortho

    # --- the pipeline ----------------------------------------------------------------------------
    def momentum_at(self, group: dict) -> float:
        warm = group["momentum_warmup_steps"]
        if warm <= 0:
            return group["momentum"]
        frac = min(1.0, group["step"] / warm)
        return (1 - frac) * group["momentum_start"] + frac * group["momentum"]

    def direction(self, p: torch.Tensor, group: dict) -> torch.Tensor:
        """The matrix handed to the orthogonalizer."""
        state = self.state[p]
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        grad = self.transform_grad(p, grad, state, group)
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf, mu = state["momentum_buffer"], self.momentum_at(group)
        if group["momentum_form"] == "damped":
            buf.lerp_(grad, 1 - mu)
            update = grad.lerp(buf, mu) if group["nesterov"] else buf.clone()
        else:
            buf.mul_(mu).add_(grad)
            update = grad.add(buf, alpha=mu) if group["nesterov"] else buf.clone()
        return self.precondition(p, update, grad, state, group)

    def ortho_dtype(self, p: torch.Tensor, group: dict) -> torch.dtype:
        """bf16 on GPU; float32 on CPU, where it is faster and exact."""
        if group["ortho_dtype"] == "auto":
            return torch.bfloat16 if p.is_cuda else torch.float32
        return DTYPES[group["ortho_dtype"]]

    def orthogonalize_stack(self, stack: torch.Tensor, group: dict, dtype: torch.dtype) -> torch.Tensor:
        """Orthogonalize a (k, ..., m, n) stack; with several processes, each does its share."""
        def ortho(x):
            return orthogonalize(x, group["ns_steps"], group["orthogonalizer"], dtype, group["norm_eps"])

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1 or stack.size(0) < 2:
            return ortho(stack)
        k = stack.size(0)
        per_rank = -(-k // world)
        padded = torch.cat([stack, stack.new_zeros((per_rank * world - k, *stack.shape[1:]))]) if per_rank * world > k else stack
        mine = ortho(padded[dist.get_rank() * per_rank : (dist.get_rank() + 1) * per_rank]).contiguous()
        gathered = torch.empty((per_rank * world, *mine.shape[1:]), dtype=mine.dtype, device=mine.device)
        ALL_GATHER(gathered, mine)
        return gathered[:k]

    @staticmethod
    def shape_scale(p: torch.Tensor, group: dict) -> float:
        return SHAPE_SCALES[group["shape_scale"]](p.size(-2), p.size(-1))

    def apply_update(self, p: torch.Tensor, ortho: torch.Tensor, group: dict) -> None:
        scale = self.shape_scale(p, group)
        ortho = ortho * scale
        if group["weight_decay"]:
            decay = group["lr"] * group["weight_decay"] * (scale if group["shape_scale_decay"] else 1.0)
            if group["cautious_wd"]:
                p.sub_(p * (ortho * p >= 0) * decay)
            else:
                p.mul_(1 - decay)
        p.add_(ortho.to(p.dtype), alpha=-group["lr"])

    def prepare_step(self) -> None:
        """Before any matrix is updated (Newton-Muon folds its collected statistics in here)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.prepare_step()
        for group in self.param_groups:
            by_shape = defaultdict(list)
            for p in group["params"]:
                by_shape[p.shape[-2:]].append(p)
            for params in by_shape.values():
                dtype = self.ortho_dtype(params[0], group)
                # A bank (experts x m x n) is its experts' m x n matrices: they join the one stack of
                # that shape, so they are orthogonalized in the batched call and sharded across ranks
                # like separate matrices.
                stack = torch.cat([self.direction(p, group).view(-1, *p.shape[-2:]) for p in params])
                ortho = self.orthogonalize_stack(stack, group, dtype)
                for p, o in zip(params, ortho.split([p[..., 0, 0].numel() for p in params])):
                    self.apply_update(p, self.postprocess(p, o.view(p.shape), self.state[p], group), group)
            group["step"] += 1
        return loss


def family_defaults(cls: type[MatrixOptimizer]) -> dict:
    """A Muon-family module's DEFAULTS: the matrix optimizer's hyperparameters and the auxiliary AdamW's."""
    return {**cls.hyperparameters(), **AUX_DEFAULTS}


def build_family(cls: type[MatrixOptimizer], params: dict, hp: dict, **extra) -> list[torch.optim.Optimizer]:
    """The matrix optimizer on the `matrix` role and the auxiliary AdamW on the others (the
    construction every Muon-family build() shares); `extra` are constructor arguments that are
    not hyperparameters (Newton-Muon's map of layer inputs)."""
    matrix = cls(params["matrix"], **{k: hp[k] for k in cls.hyperparameters()}, **extra) if params["matrix"] else None
    return [o for o in (matrix, aux_adamw(params, hp)) if o is not None]
