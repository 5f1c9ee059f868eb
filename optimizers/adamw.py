"""AdamW (Loshchilov & Hutter, 2019), torch.optim.AdamW semantics: the baseline every speedup is
quoted against. One learning rate per role, as in the speedrun baselines."""

import torch

DEFAULTS = {
    "lr": 0.003,  # hidden matrices
    "embed_lr": 0.03,
    "head_lr": 0.003,
    "scalar_lr": 0.01,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-10,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    groups = [{"params": params[role], "lr": hp["lr" if role == "matrix" else f"{role}_lr"]} for role in params if params[role]]
    return [torch.optim.AdamW(groups, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], weight_decay=hp["weight_decay"])]
