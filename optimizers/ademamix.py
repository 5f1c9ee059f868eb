"""AdEMAMix (Pagliardini et al., "The AdEMAMix Optimizer: Better, Faster, Older", arXiv 2409.03137).

Adam whose numerator mixes two gradient EMAs, a fast one (beta1) and a slow one (beta3):
(m1 / bias1 + alpha m2) / (sqrt(v / bias2) + eps). alpha and beta3 warm up over the run
(t_alpha_beta3 = the schedule's length, as in the paper), so the slow EMA does not dominate early.

Library: pytorch-optimizer 4.1.0 (`AdEMAMix`), which follows the paper's algorithm with its alpha
and beta3 schedulers; heavyball's AdEMAMix is built from its chainable pieces and compiles on GPU.
Roles: every role, one learning rate per role (as the AdamW baseline it replaces).
Defaults: the AdamW baseline's rates (adamw.py) and betas (0.9, 0.95); alpha 5 (the paper's); beta3
0.999 rather than the paper's 0.9999, which averages over ~10k steps, far beyond these runs.
Search space: the shipped optimizers' budget. lr in {0.003, 0.006} (AdamW's grid halved: alpha 5
adds the slow EMA to the step) on seed 0 at the track's schedule (scripts/sweep.py, every other
value fixed), then the shortest schedule the track's rule admits (scripts/find_steps.py, seeds 0-2);
the trials are in records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

from optimizers._library import ADAMW_ROLE_RATES, load, per_role_groups

LIBRARIES = ("pytorch_optimizer",)
DEFAULTS = {
    **ADAMW_ROLE_RATES,
    "beta1": 0.9,
    "beta2": 0.95,
    "beta3": 0.999,
    "alpha": 5.0,
    "eps": 1e-8,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    AdEMAMix = load("pytorch_optimizer", "AdEMAMix")
    return [AdEMAMix(per_role_groups(params, hp), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"], hp["beta3"]), alpha=hp["alpha"],
                     t_alpha_beta3=float(hp["steps"]), eps=hp["eps"], weight_decay=hp["weight_decay"], weight_decouple=True)]
