"""NAdamW: Adam with Nesterov momentum (Dozat, "Incorporating Nesterov Momentum into Adam", 2016)
and decoupled weight decay; AlgoPerf's strongest hand-tuned baseline.

Library: torch (`torch.optim.NAdam(decoupled_weight_decay=True)`, the platform: no extra needed),
rather than pytorch-optimizer's re-implementation. NAdam's momentum_decay (psi = 0.004) schedules
the Nesterov momentum as in the paper.
Roles: every role, one learning rate per role (as the AdamW baseline it replaces).
Defaults: the AdamW baseline's (adamw.py): its rates, betas (0.9, 0.95), eps 1e-10, no weight decay.
Search space: the shipped optimizers' budget. lr in {0.006, 0.012} (AdamW's grid) on seed 0 at the
track's schedule (scripts/sweep.py, every other value fixed), then the shortest schedule the track's
rule admits (scripts/find_steps.py, seeds 0-2); the trials are in records/sweeps.jsonl, the result
in optimizers/tuned.toml.
"""

import torch

from optimizers._library import ADAMW_ROLE_RATES, per_role_groups

DEFAULTS = {
    **ADAMW_ROLE_RATES,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-10,
    "weight_decay": 0.0,
    "momentum_decay": 0.004,
}


def build(params, hp, model):
    return [torch.optim.NAdam(per_role_groups(params, hp), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                              weight_decay=hp["weight_decay"], momentum_decay=hp["momentum_decay"], decoupled_weight_decay=True)]
