"""Optimizer diagnostics on a real tiny-cpu training run.

1. Directional alignment: cos(NS_k(X), polar(X)) for k = 1..5 Newton-Schulz (NS5) steps, where X
   is the matrix each optimizer hands to its orthogonalizer (Muon: the Nesterov momentum; Muon²:
   the momentum divided by sqrt(V) + eps), captured at several steps of a real run, and polar(X)
   is the exact polar factor (float64 SVD). The Muon² paper (arXiv 2604.09967) claims its
   preconditioned momentum is far better conditioned, so that 3 steps align as well as Muon's 5.
   Also the median condition number sigma_max / sigma_min of X.
2. Per optimizer: the optimizer step's median time and its state memory (all its optimizers,
   embedding/head AdamW included), on the tiny-cpu model with real gradients, eager mode.

    python scripts/diagnostics.py [--steps 200] [--capture 25,100,200] [--out records/diagnostics.json]

Time it alone: other load on a 2-core machine inflates step times several-fold.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import optimizers
from nanogpt.data import BatchSampler, TokenStream
from nanogpt.errors import UserError, entry_point
from nanogpt.model import GPT
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.schedule import lr_multiplier
from nanogpt.tracks import get_track
from nanogpt.train import Workload, step_optimizers, train_step
from optimizers._orthogonalize import orthogonalize, polar_factor

NS_STEPS = (1, 2, 3, 4, 5)


def train(name: str, steps: int, seed: int, on_step=None, track_name: str = "tiny-cpu") -> list[torch.optim.Optimizer]:
    """A tiny-cpu run (eager, the track's batch and schedule); on_step(step, opts) runs before each
    optimizer step and may wrap it. Returns the optimizers at the end."""
    track = get_track(track_name)
    spec = load_optimizer(name)
    hp = {**default_hparams(spec, track), "steps": steps}
    torch.manual_seed(seed)
    model = GPT(track.model)
    opts = build_optimizers(spec, model, hp)
    sampler = BatchSampler(TokenStream(track.resolve(track.train_files)), track.seq_len, track.batch_size, seed)
    w = Workload.local(model, micro=track.batch_size)
    for step in range(steps):
        lr = lr_multiplier(step, steps, hp["warmup_frac"], hp["cooldown_frac"], hp["final_lr_mult"])
        train_step(w, opts, step, w.split(sampler.next_global_batch()), lr,
                   optimizer_step=step_optimizers if on_step is None else functools.partial(on_step, step))
    return opts


def capture_directions(name: str, steps: int, capture_at: set[int], seed: int) -> dict[int, list[torch.Tensor]]:
    """The matrices the optimizer orthogonalizes at the chosen (1-based) steps."""
    captured: dict[int, list[torch.Tensor]] = {}

    def step(i: int, opts) -> None:
        matrix_opt = opts[0]
        if i + 1 in capture_at:
            original = matrix_opt.direction

            def recording(p, group):
                d = original(p, group)
                captured.setdefault(i + 1, []).append(d.detach().clone())
                return d

            matrix_opt.direction = recording
            for o in opts:
                o.step()
            del matrix_opt.direction  # back to the class method
        else:
            for o in opts:
                o.step()

    train(name, steps, seed, step)
    return captured


def alignment(matrices: list[torch.Tensor]) -> dict:
    """Mean and minimum over matrices of cos(NS_k(X), polar(X)) per k, and the median condition number."""
    cos = {k: [] for k in NS_STEPS}
    conditions = []
    for x in matrices:
        polar = polar_factor(x)
        s = torch.linalg.svdvals(x.double())
        conditions.append(float(s[0] / s[-1].clamp_min(1e-300)))
        for k in NS_STEPS:
            o = orthogonalize(x, k, "ns5", torch.float32).double()
            cos[k].append(float((o * polar).sum() / (o.norm() * polar.norm())))
    return {"n": len(matrices), "condition_median": statistics.median(conditions),
            "cos_mean": {k: statistics.fmean(v) for k, v in cos.items()}, "cos_min": {k: min(v) for k, v in cos.items()}}


COST_WARMUP = 5  # untimed optimizer steps (allocation of the state, first-call costs)


def untimed_steps(steps: int) -> int:
    """The warmup steps of a timing run of `steps` steps: at least one step is always timed."""
    return min(COST_WARMUP, steps - 1)


def step_cost(name: str, steps: int, seed: int) -> dict:
    """Median optimizer-step time over the run (after its untimed steps) and the state size at the end."""
    times: list[float] = []

    def step(i: int, opts) -> None:
        start = time.perf_counter()
        step_optimizers(opts)
        if i >= untimed_steps(steps):
            times.append(time.perf_counter() - start)

    opts = train(name, steps, seed, step)
    state_bytes = sum(v.numel() * v.element_size() for o in opts for s in o.state.values() for v in s.values() if torch.is_tensor(v))
    return {"optimizer": name, "opt_step_ms": 1000 * statistics.median(times), "state_mb": state_bytes / 2**20}


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " The defaults take about 3 minutes on 2 CPU cores.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=200, help="length of the captured runs")
    p.add_argument("--capture", default="25,100,200", help="1-based steps whose matrices are captured")
    p.add_argument("--cost-steps", type=int, default=40, help=f"steps of each timing run (the first {COST_WARMUP} untimed)")
    p.add_argument("--optimizers", default=",".join(optimizers.available()), help="for the step cost")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order of every run")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        capture_at = {int(s) for s in args.capture.split(",")}
    except ValueError:
        raise UserError(f"--capture {args.capture!r}: expected 1-based step numbers like 25,100,200") from None
    if min(capture_at) < 1 or max(capture_at) > args.steps:
        raise UserError(f"--capture steps must lie in 1..{args.steps} (--steps)")
    if args.cost_steps < 1:
        raise UserError(f"--cost-steps {args.cost_steps}: must be at least 1")
    names = args.optimizers.split(",")
    for name in names:
        load_optimizer(name)  # an unknown name fails now, not after the alignment runs

    results: dict = {"alignment": {}, "cost": []}
    print(f"cos(NS_k(X), polar(X)), mean (min) over the matrices, tiny-cpu seed {args.seed}:")
    print("| optimizer | step | matrices | cond(X) median | " + " | ".join(f"k={k}" for k in NS_STEPS) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(NS_STEPS))
    for name in ("muon", "muon2"):
        for step, matrices in sorted(capture_directions(name, args.steps, capture_at, args.seed).items()):
            a = alignment(matrices)
            results["alignment"][f"{name}@{step}"] = a
            cells = " | ".join(f"{a['cos_mean'][k]:.3f} ({a['cos_min'][k]:.3f})" for k in NS_STEPS)
            print(f"| {name} | {step} | {a['n']} | {a['condition_median']:.3g} | {cells} |", flush=True)

    print(f"\noptimizer step cost (eager, median over {args.cost_steps - untimed_steps(args.cost_steps)} steps) and state:")
    print("| optimizer | step (ms) | state (MB) |\n|---|---:|---:|")
    for name in names:
        c = step_cost(name, args.cost_steps, args.seed)
        results["cost"].append(c)
        print(f"| {name} | {c['opt_step_ms']:.2f} | {c['state_mb']:.2f} |", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
