"""torch.optim.Muon: PyTorch's own Muon (Keller Jordan, 2024), a second, independent implementation
of optimizers/muon.py. Its results next to ours are a check of our Muon.

Same algorithm and conventions as our default Muon: damped Nesterov momentum (buf.lerp_(g, 1 - mu);
g.lerp(buf, mu)), five NS5 steps with Keller's coefficients on the bf16 matrix normalized by its
Frobenius norm (eps 1e-7), learning rate scaled by max(1, rows/cols)^0.5 (adjust_lr_fn "original"),
decoupled weight decay. It always orthogonalizes in bf16 (ours in float32 on CPU), and it handles
2-D parameters only. tests/test_library_optimizers.py checks a few steps against optimizers/muon.py
set to bf16.

Library: torch (the platform; no extra needed). Roles: hidden matrices; the others take the
auxiliary AdamW with the same defaults as muon.py.
Defaults: muon.py's (lr 0.02, momentum 0.95, no weight decay; torch's own default decay is 0.1).
Search space (part 4): lr in {0.01, 0.02, 0.04}; weight_decay in {0, 0.01}.
"""

import torch

ROLES = ("matrix",)
DEFAULTS = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": 5,
    "eps": 1e-7,
    "weight_decay": 0.0,
    "adjust_lr_fn": "original",
}


def build(params, hp, model):
    return [torch.optim.Muon(params["matrix"], lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"],
                             ns_steps=hp["ns_steps"], eps=hp["eps"], weight_decay=hp["weight_decay"],
                             adjust_lr_fn=hp["adjust_lr_fn"])]
