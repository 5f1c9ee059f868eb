"""Synthetic runs for the records tests: run.py's argument parsing, configuration and recording
path (nanogpt.recording.Recording), with a made-up loss curve and clock instead of training, so a test can record dozens
of runs in a second. Each optimizer has a profile (loss floor, decay, step time); `lr` away from
the optimizer's default raises the floor and slows the decay, lr >= 1 diverges, so sweeps and step searches have something to find."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

import run
from nanogpt.cli import spec_from_args
from nanogpt.optim import default_hparams
from nanogpt.recording import Recording
from nanogpt.runlog import eval_line, train_line

PROFILES = {"muon": (1.45, 8.0, 0.060), "adamw": (1.52, 12.0, 0.055), "sgd": (1.75, 20.0, 0.045)}  # floor, tau (steps), s/step


def curve(optimizer: str, hp: dict, default_lr: float) -> tuple[float, float, float]:
    """The profile, worse (higher floor, slower decay) as lr moves away from the optimizer's default."""
    floor, tau, step_s = PROFILES[optimizer]
    octaves = abs(math.log2(hp["lr"] / default_lr))
    return floor + 0.08 * octaves, tau * (1 + octaves), step_s


def fake_run(argv: list[str], noise: float = 0.004, diverge_seeds: tuple[int, ...] = (), device: str = "fake-cpu",
             contended_seeds: tuple[int, ...] = ()) -> int:
    """Record one synthetic run for run.py's argv; returns run.py's exit status (0 ok, 1 diverged).
    Seeds in `diverge_seeds` diverge whatever the hyperparameters (an unlucky seed); seeds in
    `contended_seeds` are recorded as timed on a busy machine."""
    args = run.parse_args(argv)
    spec = spec_from_args(args)
    track, hp = spec.track, spec.hparams
    floor, tau, step_s = curve(spec.optimizer.name, hp, default_hparams(spec.optimizer, track)["lr"])
    rng = np.random.default_rng([args.seed, zlib.crc32(json.dumps(hp, sort_keys=True).encode())])
    shift, speed = noise * rng.normal(), 1 + 0.02 * rng.normal()
    env = {"python": "3", "torch": "fake", "cuda": None, "device": device, "world_size": 1}
    rec = Recording(spec, args.records_dir, args.seed, env, flops_per_token=1000, diverge_at=8.0)

    def loss(step: int) -> float:
        return floor + shift + (5.5 - floor) * math.exp(-step / tau)

    status, elapsed = "ok", 0.0
    for step in range(track.steps):
        if step % track.eval_every == 0:
            rec.line(eval_line(step, track.steps, loss(step) + 0.03, elapsed))
        elapsed += step_s * speed
        blows_up = hp["lr"] >= 1 or args.seed in diverge_seeds
        train_loss = float("nan") if blows_up and step >= 1 else loss(step + 1)
        rec.line(train_line(step + 1, track.steps, train_loss, elapsed))
        if not math.isfinite(train_loss):
            status = "diverged"
            break
    if status == "ok":
        rec.line(eval_line(track.steps, track.steps, loss(track.steps) + 0.03, elapsed))
    busy = args.seed in contended_seeds
    rec.finish(status, {"opt_step_share": 0.1, "peak_mem_mb": 100.0, "checkpoint": None, "calib_ms": 50.0,
                        "cpu_util": 0.5 if busy else 0.97, "cpu_pressure": 0.4 if busy else 0.01, "steal": 0.0, "contended": busy})
    return 0 if status == "ok" else 1


def record(records_dir: Path, optimizer: str, seeds, *sets: str, steps: int = 60) -> None:
    """Record one synthetic run per seed."""
    for seed in seeds:
        fake_run(["--optimizer", optimizer, "--seed", str(seed), "--steps", str(steps), "--records-dir", str(records_dir),
                  "--quiet", *(a for s in sets for a in ("--set", s))])
