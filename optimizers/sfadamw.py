"""Schedule-free AdamW (Defazio et al., "The Road Less Scheduled", arXiv 2405.15682): AlgoPerf's
self-tuning track winner.

No learning-rate decay: the gradient is taken at y = (1 - beta1) z + beta1 x, the base iterate z
takes Adam-normalized steps, and x is a running average of z (weights lr_max^weight_lr_power). The
model is evaluated, and checkpointed, at x: the harness calls the optimizer's eval() before every
evaluation and train() after it (nanogpt/train.py); tests/test_library_optimizers.py checks both.

Library: schedulefree 1.4.1 (`AdamWScheduleFree`, the authors' own package and AlgoPerf submission),
rather than heavyball's SFAdamW (a re-implementation). Tested against the paper's update written
out in a few lines.

Roles: every role, one learning rate per role (as the AdamW baseline it replaces).
Defaults: the AdamW baseline's rates (adamw.py), betas (0.9, 0.95), eps 1e-8, no weight decay; no
cooldown (cooldown_frac 0: the point of the method) and a 5 % linear warmup (the paper's).
Search space: the shipped optimizers' budget. lr in {0.006, 0.012} (AdamW's grid) on seed 0 at the
track's schedule (scripts/sweep.py, every other value fixed), then the shortest schedule the track's
rule admits (scripts/find_steps.py, seeds 0-2); the trials are in records/sweeps.jsonl, the result
in optimizers/tuned.toml.
"""

from optimizers._library import ADAMW_ROLE_RATES, load, per_role_groups

LIBRARIES = ("schedulefree",)
DEFAULTS = {
    "warmup_frac": 0.05,
    "cooldown_frac": 0.0,
    **ADAMW_ROLE_RATES,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "r": 0.0,
    "weight_lr_power": 2.0,
}


def build(params, hp, model):
    AdamWScheduleFree = load("schedulefree", "AdamWScheduleFree")
    return [AdamWScheduleFree(per_role_groups(params, hp), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                              weight_decay=hp["weight_decay"], r=hp["r"], weight_lr_power=hp["weight_lr_power"])]
