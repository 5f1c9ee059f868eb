"""Model checkpoints saved next to a run's log (records/logs/<run_id>.pt).

A checkpoint holds the final model weights and everything needed to rebuild and identify the
model without the trainer: track name, model configuration, optimizer name and hyperparameters,
seed, run id, steps trained and the final validation loss. It holds no optimizer state: it is
for evaluating what a run learned (scripts/robustness.py), not for resuming. Writes are atomic,
so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from nanogpt.config import ModelConfig, Track
from nanogpt.errors import UserError
from nanogpt.model import GPT

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode, on CPU) and its metadata."""

    model: GPT
    run_id: str
    track: str
    optimizer: str
    hparams: dict
    seed: int
    steps: int
    val_loss: float


def checkpoint_path(records_dir: str | Path, run_id: str) -> Path:
    return Path(records_dir) / "logs" / f"{run_id}.pt"


def save_checkpoint(path: str | Path, model: GPT, *, track: Track, run_id: str, optimizer: str, hparams: dict, seed: int,
                    steps: int, val_loss: float) -> Path:
    """Write the model's weights and configuration to `path` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "track": track.name,
        "model_config": dataclasses.asdict(model.cfg),
        "optimizer": optimizer,
        "hparams": dict(hparams),
        "seed": int(seed),
        "steps": int(steps),
        "val_loss": float(val_loss),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model from a checkpoint; a missing or foreign file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; train with `python run.py --save-checkpoint ...`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which one
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}); delete it or re-run its training") from e
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a checkpoint of format version {FORMAT_VERSION}; re-run its training with --save-checkpoint")
    model = GPT(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Checkpoint(model=model, run_id=payload["run_id"], track=payload["track"], optimizer=payload["optimizer"],
                      hparams=payload["hparams"], seed=payload["seed"], steps=payload["steps"], val_loss=payload["val_loss"])
