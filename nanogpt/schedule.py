"""The learning-rate schedule shape, applied by the harness identically to every optimizer.

Warmup (linear from 0), then constant, then a linear cooldown to final_lr_mult (the WSD shape of
the speedruns). Its three fractions are hyperparameters of the submission (--set warmup_frac=...).
"""

from __future__ import annotations

SCHEDULE_KEYS = ("warmup_frac", "cooldown_frac", "final_lr_mult")


def lr_multiplier(step: int, total: int, warmup_frac: float, cooldown_frac: float, final_lr_mult: float) -> float:
    """Multiplier of the base learning rate for the update made at 0-based `step` of `total`."""
    warmup = round(warmup_frac * total)
    cooldown = round(cooldown_frac * total)
    if step < warmup:
        return (step + 1) / warmup
    if step >= total - cooldown:
        progress = (total - step) / cooldown  # 1 at the start of the cooldown, 1/cooldown at the last step
        return final_lr_mult + (1.0 - final_lr_mult) * progress
    return 1.0


def set_lr(optimizers, multiplier: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
