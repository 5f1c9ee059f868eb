"""Adafactor (Shazeer & Stern, arXiv 1804.04235): Adam's second moment factored into row and column
statistics (memory m + n per matrix instead of m n), no first moment, a second-moment decay that
grows with the step (beta2_t = 1 - t^-decay_exponent) and steps relative to the weight's RMS.

Library: torch (`torch.optim.Adafactor`, the platform: no extra needed), rather than
pytorch-optimizer's AdaFactor: PyTorch's follows the paper's default configuration (no momentum,
relative steps min(lr, 1/sqrt(t)) times max(eps2, RMS(W)), update clipping d) and is maintained
with torch.
Roles: every role, one learning rate per role (as the AdamW baseline it replaces).
Defaults: PyTorch's (the paper's) lr 0.01, decay_exponent 0.8, d 1.0 and no weight decay, except
where our model's zero-initialized head meets the relative step: a step is sized max(eps2, RMS(W))
times the rate, so a zero head moves by eps2 times the rate. eps2 is 1e-2 (the paper's 1e-3 barely
moves it) and head_lr 0.1; with these the tiny-cpu loss falls within 8 steps, with the paper's it
does not.
Search space: the shipped optimizers' budget. lr in {0.01, 0.02} (PyTorch's default and twice it; a
relative step) on seed 0 at the track's schedule (scripts/sweep.py, every other value fixed), then
the shortest schedule the track's rule admits (scripts/find_steps.py, seeds 0-2); the trials are in
records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

import torch

from optimizers._library import per_role_groups

DEFAULTS = {
    "lr": 0.01,
    "embed_lr": 0.01,
    "head_lr": 0.1,
    "scalar_lr": 0.01,
    "decay_exponent": 0.8,  # torch's beta2_decay = -0.8 (named so that it is not checked as a beta in [0, 1])
    "eps2": 1e-2,
    "d": 1.0,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    return [torch.optim.Adafactor(per_role_groups(params, hp), lr=hp["lr"], beta2_decay=-hp["decay_exponent"],
                                  eps=(None, hp["eps2"]), d=hp["d"], weight_decay=hp["weight_decay"])]
