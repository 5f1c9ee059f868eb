"""SOAP: ShampoO with Adam in the Preconditioner's eigenbasis (Vyas et al., arXiv 2409.11321).

Adam run in the slowly rotating eigenbasis of Shampoo's two Kronecker factors (L = E[G Gᵀ],
R = E[Gᵀ G], EMA with shampoo_beta); the eigenbasis is refreshed every `precondition_frequency`
steps. One of the three optimizers of modded-nanogpt's optimization track.

Library: heavyball 3.2.1 (`heavyball.SOAP`), rather than pytorch-optimizer's SOAP (a port of the
reference nikhilvyas/SOAP): heavyball is actively maintained by the authors of the track-3 PSGD and
SOAP entries, ships PSGD-Kron (psgd_kron.py) in the same machinery, and compiles its update on GPU
(on CPU it runs eagerly: optimizers/_library.py). Its first step only sets up the preconditioner.

Roles: hidden matrices (ROLES); embeddings, head and 1-D parameters take the Muon family's auxiliary
AdamW (embed_lr, head_lr, scalar_lr, adam_*), as in the track-3 entries.
Defaults: the paper's language-model values (betas (0.95, 0.95), shampoo_beta 0.95, eps 1e-8,
preconditioning every 10 steps) with lr 3e-3 (the paper's best for 124M at batch 256) and no
weight decay (like the AdamW baseline).
Search space: the shipped optimizers' budget. lr in {0.003, 0.006} (the paper's 124M rate and twice
it) on seed 0 at the track's schedule (scripts/sweep.py, every other value fixed), then the shortest
schedule the track's rule admits (scripts/find_steps.py, seeds 0-2); the trials are in
records/sweeps.jsonl, the result in optimizers/tuned.toml.
"""

from optimizers._library import eager_on_cpu, load

LIBRARIES = ("heavyball",)
ROLES = ("matrix",)
DEFAULTS = {
    "lr": 0.003,
    "beta1": 0.95,
    "beta2": 0.95,
    "shampoo_beta": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "precondition_frequency": 10,
}


def build(params, hp, model):
    SOAP = load("heavyball", "SOAP")
    eager_on_cpu(SOAP, params["matrix"])
    return [SOAP(params["matrix"], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), shampoo_beta=hp["shampoo_beta"],
                 eps=hp["eps"], weight_decay=hp["weight_decay"], precondition_frequency=hp["precondition_frequency"])]
