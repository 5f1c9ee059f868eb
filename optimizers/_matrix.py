"""Shared pieces of the Muon family: the matrix-optimizer skeleton and the auxiliary AdamW.

Every Muon variant is the same pipeline with one or two stages replaced:

    G -> transform_grad -> momentum (+ Nesterov) -> precondition -> orthogonalize -> postprocess
      -> shape scale -> decoupled weight decay -> W <- W - lr * O

Matrices of one shape are orthogonalized in one batched call; with several processes each rank
orthogonalizes its share of the stack and the results are all-gathered.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from nanogpt.orthogonalize import orthogonalize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class MatrixOptimizer(torch.optim.Optimizer):
    """Muon (Keller Jordan, 2024) with hooks for its variants.

    Momentum is the damped EMA M <- mu M + (1 - mu) G with the Nesterov mix (1 - mu) G + mu M
    (modded-nanogpt / KellerJordan/Muon); the shape factor max(1, m/n)^0.5 multiplies the update.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        orthogonalizer: str = "ns5",
        ortho_dtype: str = "auto",
        weight_decay: float = 0.0,
        momentum_warmup_steps: int = 0,
        momentum_start: float = 0.85,
        norm_eps: float = 1e-7,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, orthogonalizer=orthogonalizer,
            ortho_dtype=ortho_dtype, weight_decay=weight_decay, momentum_warmup_steps=momentum_warmup_steps,
            momentum_start=momentum_start, norm_eps=norm_eps, step=0,
        )
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
        """After orthogonalization (NorMuon's per-neuron normalization)."""
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
        buf.lerp_(grad, 1 - mu)
        update = grad.lerp(buf, mu) if group["nesterov"] else buf.clone()
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
        dist.all_gather_into_tensor(gathered, mine)
        return gathered[:k]

    @staticmethod
    def shape_scale(p: torch.Tensor) -> float:
        return max(1.0, p.size(-2) / p.size(-1)) ** 0.5

    def apply_update(self, p: torch.Tensor, ortho: torch.Tensor, group: dict) -> None:
        ortho = ortho * self.shape_scale(p)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(ortho.to(p.dtype), alpha=-group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_shape = defaultdict(list)
            for p in group["params"]:
                by_shape[p.shape].append(p)
            for params in by_shape.values():
                dtype = self.ortho_dtype(params[0], group)
                stack = torch.stack([self.direction(p, group) for p in params])
                ortho = self.orthogonalize_stack(stack, group, dtype)
                for p, o in zip(params, ortho):
                    self.apply_update(p, self.postprocess(p, o, self.state[p], group), group)
            group["step"] += 1
        return loss


AUX_DEFAULTS = {
    "embed_lr": 0.3,
    "head_lr": 0.008,
    "scalar_lr": 0.04,
    "adam_beta1": 0.8,
    "adam_beta2": 0.95,
    "adam_eps": 1e-10,
    "adam_weight_decay": 0.0,
}


def aux_adamw(params: dict[str, list], hp: dict) -> torch.optim.AdamW | None:
    """AdamW for the non-matrix roles (embed, head, scalar), one group per role."""
    groups = [
        {"params": params[role], "lr": hp[f"{role}_lr"]}
        for role in ("embed", "head", "scalar")
        if params[role]
    ]
    if not groups:
        return None
    return torch.optim.AdamW(
        groups, betas=(hp["adam_beta1"], hp["adam_beta2"]), eps=hp["adam_eps"], weight_decay=hp["adam_weight_decay"]
    )


MUON_DEFAULTS = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "orthogonalizer": "ns5",
    "ortho_dtype": "auto",
    "weight_decay": 0.0,
    "momentum_warmup_steps": 0,
    "momentum_start": 0.85,
    **AUX_DEFAULTS,
}


def muon_kwargs(hp: dict) -> dict:
    """The MatrixOptimizer arguments of a Muon-family hyperparameter dict."""
    keys = ("lr", "momentum", "nesterov", "ns_steps", "orthogonalizer", "ortho_dtype", "weight_decay",
            "momentum_warmup_steps", "momentum_start")
    return {k: hp[k] for k in keys}


def build_matrix_with_aux(matrix_opt: torch.optim.Optimizer | None, params: dict, hp: dict) -> list[torch.optim.Optimizer]:
    return [o for o in (matrix_opt, aux_adamw(params, hp)) if o is not None]
