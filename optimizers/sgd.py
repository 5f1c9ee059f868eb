"""SGD with Nesterov momentum, torch.optim.SGD(nesterov=True) semantics (coupled weight decay):
Muon with the orthogonalization removed. One learning rate per role."""

import torch

DEFAULTS = {
    "lr": 0.1,  # hidden matrices
    "embed_lr": 0.1,
    "head_lr": 0.1,
    "scalar_lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0,
}


def build(params, hp, model):
    groups = [{"params": params[role], "lr": hp["lr" if role == "matrix" else f"{role}_lr"]} for role in params if params[role]]
    return [torch.optim.SGD(groups, momentum=hp["momentum"], nesterov=True, weight_decay=hp["weight_decay"])]
