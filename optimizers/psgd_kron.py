"""PSGD-Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted online (Xi-Lin Li,
arXiv 1512.04202; the Kron variant of kron_torch by Evan Walters and Omead Pooladzandi).

The momentum is preconditioned by P = QᵀQ, Q a product of per-dimension factors updated by a
Lie-group gradient step on a criterion that whitens the gradient; the preconditioner is updated
with a probability that decays from 1 to 0.03 over the first steps (the library's schedule).
One of the three optimizers of modded-nanogpt's optimization track.

Library: heavyball 3.2.1 (`heavyball.PSGDKron`, adapted from kron_torch, the implementation of the
track-3 entries); pytorch-optimizer's Kron is an older port of kron_torch. On CPU it runs eagerly
(optimizers/_library.py).

Roles: hidden matrices (ROLES); the others take the Muon family's auxiliary AdamW.
Defaults: kron_torch's (lr 1e-3, momentum beta 0.9, precond_lr 0.1, precond_init_scale 1.0) with no
weight decay. The initial scale is set rather than estimated from the first gradient: our model's
head starts at zero, so the first hidden-matrix gradients are exactly zero and the estimate fails.
Search space: the shipped optimizers' budget. lr in {0.001, 0.002} (kron_torch's default and twice
it) on seed 0 at the track's schedule (scripts/sweep.py, every other value fixed), then the shortest
schedule the track's rule admits (scripts/find_steps.py, seeds 0-2); the trials are in
records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

from optimizers._library import eager_on_cpu, load

LIBRARIES = ("heavyball",)
ROLES = ("matrix",)
DEFAULTS = {
    "lr": 0.001,
    "beta1": 0.9,
    "weight_decay": 0.0,
    "precond_lr": 0.1,
    "precond_init_scale": 1.0,
    "max_size_triangular": 2048,
}


def build(params, hp, model):
    PSGDKron = load("heavyball", "PSGDKron")
    eager_on_cpu(PSGDKron, params["matrix"])
    return [PSGDKron(params["matrix"], lr=hp["lr"], betas=(hp["beta1"], 0.999), weight_decay=hp["weight_decay"],
                     precond_lr=hp["precond_lr"], precond_init_scale=hp["precond_init_scale"],
                     max_size_triangular=hp["max_size_triangular"])]
