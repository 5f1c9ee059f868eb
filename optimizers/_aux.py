"""The auxiliary AdamW: what takes the roles an optimizer does not handle itself.

Part of the harness (nanogpt/optim.py hands every such role to it), so it lives apart from the
Muon family's machinery (optimizers/_matrix.py): an edit to orthogonalization never changes the
identity of an AdamW or library-optimizer run.
"""

from __future__ import annotations

import torch

# The auxiliary AdamW (embeddings, head, 1-D parameters), the speedrun's values.
AUX_DEFAULTS = {
    "embed_lr": 0.3,
    "head_lr": 0.008,
    "scalar_lr": 0.04,
    "adam_beta1": 0.8,
    "adam_beta2": 0.95,
    "adam_eps": 1e-10,
    "adam_weight_decay": 0.0,
}


def aux_adamw(params: dict[str, list], hp: dict) -> torch.optim.AdamW | None:
    """AdamW for the non-matrix roles (embed, head, scalar), one group per role."""
    groups = [
        {"params": params[role], "lr": hp[f"{role}_lr"]}
        for role in ("embed", "head", "scalar")
        if params[role]
    ]
    if not groups:
        return None
    return torch.optim.AdamW(
        groups, betas=(hp["adam_beta1"], hp["adam_beta2"]), eps=hp["adam_eps"], weight_decay=hp["adam_weight_decay"]
    )
