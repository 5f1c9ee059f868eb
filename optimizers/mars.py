"""MARS: Make vAriance Reduction Shine (Yuan et al., arXiv 2411.10438), its AdamW instance.

A STORM-style variance-reduced gradient c = g_t + gamma beta1/(1 - beta1) (g_t - g_{t-1}), clipped
to unit norm, fed to AdamW's moments. Matrices (embeddings and head included) take MARS; 1-D
parameters take plain AdamW inside the same optimizer (the paper's setting, optimize_1d=False).

Library: pytorch-optimizer 4.1.0 (`MARS`, ported from the authors' AGI-Arena/MARS); heavyball only
offers MARS as a `mars=True` modifier of its other optimizers.
Roles: every role, one learning rate per role (as the AdamW baseline it replaces; 1-D parameters
use their role's rate: lr_1d is set equal to lr).
Defaults: the paper's GPT-2 values (betas (0.95, 0.99), gamma 0.025) with the AdamW baseline's rates
(adamw.py) and no weight decay.
Search space: the shipped optimizers' budget. lr in {0.003, 0.006} (the paper's GPT-2 rates are
below AdamW's) on seed 0 at the track's schedule (scripts/sweep.py, every other value fixed), then
the shortest schedule the track's rule admits (scripts/find_steps.py, seeds 0-2); the trials are in
records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

from optimizers._library import ADAMW_ROLE_RATES, load, per_role_groups

LIBRARIES = ("pytorch_optimizer",)
DEFAULTS = {
    **ADAMW_ROLE_RATES,
    "beta1": 0.95,
    "beta2": 0.99,
    "gamma": 0.025,
    "eps": 1e-8,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    MARS = load("pytorch_optimizer", "MARS")
    return [MARS(per_role_groups(params, hp), lr=hp["lr"], lr_1d=hp["lr"], betas=(hp["beta1"], hp["beta2"]), gamma=hp["gamma"],
                 mars_type="adamw", eps=hp["eps"], weight_decay=hp["weight_decay"], weight_decay_1d=hp["weight_decay"])]
