"""Lion: EvoLved Sign Momentum (Chen et al., "Symbolic Discovery of Optimization Algorithms", arXiv
2302.06675).

The update is the sign of an interpolation between the momentum and the gradient,
sign(beta1 m + (1 - beta1) g); the momentum then tracks the gradient with beta2. Decoupled weight
decay. State: one buffer.

Library: pytorch-optimizer 4.1.0 (`Lion`; heavyball 3.2.1 has no Lion). Roles: every role, one
learning rate per role (as the AdamW baseline it replaces).
Defaults: the paper's language-model betas (0.95, 0.98) and its rule of thumb of a learning rate
3-10x smaller than AdamW's: the AdamW baseline's rates (adamw.py) divided by 10 (by 3 for scalars).
Search space: the shipped optimizers' budget. lr in {0.0006, 0.0012} (AdamW's grid divided by 10,
the paper's rule of thumb) on seed 0 at the track's schedule (scripts/sweep.py, every other value
fixed), then the shortest schedule the track's rule admits (scripts/find_steps.py, seeds 0-2); the
trials are in records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

from optimizers._library import load, per_role_groups

LIBRARIES = ("pytorch_optimizer",)
DEFAULTS = {
    "lr": 0.0003,
    "embed_lr": 0.003,
    "head_lr": 0.0003,
    "scalar_lr": 0.003,
    "beta1": 0.95,
    "beta2": 0.98,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    Lion = load("pytorch_optimizer", "Lion")
    return [Lion(per_role_groups(params, hp), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), weight_decay=hp["weight_decay"])]
