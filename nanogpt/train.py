"""The step loop: one training step, the untimed warmup with its reset, evaluation, and the timed loop.

Everything that trains a model uses these functions (run.py, scripts/bench_gpu.py,
scripts/diagnostics.py, the tests), so "a step" means one thing everywhere. Each function takes
its state explicitly: after the warmup reset the caller holds new optimizers and a new timer,
and nothing keeps a reference to the old ones.

Timing rules (README "Timing rules"): only `train_step` calls run inside the clock; evaluation
runs while it is stopped; compilation is paid by `warmup_and_reset` before the clock exists.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from nanogpt import distributed
from nanogpt.contention import ContentionMeter
from nanogpt.data import micro_batches
from nanogpt.schedule import lr_multiplier, set_lr
from nanogpt.timing import RegionTimer, TrainClock

Optimizers = list[torch.optim.Optimizer]
MicroBatches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Workload:
    """What every step of a run shares: the model (eager, and compiled when the track compiles),
    the process group and how this rank splits the global batch, and the autocast dtype.

    Training runs `train_model`: the compiled model, inside DistributedDataParallel when several
    processes train (distributed.data_parallel), so gradients are averaged during the backward
    pass. Evaluation runs `fast_model` (no gradients to synchronize); the optimizers, checkpoints
    and the warmup reset use `model`, whose parameters all three share."""

    model: torch.nn.Module
    fast_model: torch.nn.Module
    ctx: distributed.Dist
    micro: int  # sequences per forward/backward on this rank
    accum: int  # micro-batches per step on this rank
    dtype: str = "float32"  # autocast dtype on GPU ("float32": none)
    train_model: torch.nn.Module = field(init=False)

    def __post_init__(self):
        self.train_model = distributed.data_parallel(self.fast_model, self.ctx)

    @classmethod
    def local(cls, model: torch.nn.Module, fast_model: torch.nn.Module | None = None, device: str = "cpu",
              micro: int = 1, accum: int = 1, dtype: str = "float32") -> Workload:
        """One process (scripts and tests that train a model directly); eager unless given a compiled model."""
        return cls(model, fast_model or model, distributed.Dist(rank=0, world_size=1, local_rank=0, device=device), micro, accum, dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def split(self, global_batch: np.ndarray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of one global batch (identical on every rank)."""
        return micro_batches(global_batch, self.ctx.rank, self.ctx.world_size, self.micro, self.ctx.device)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Accumulate gradients locally (every micro-batch of a step but the last)."""
        return self.train_model.no_sync() if hasattr(self.train_model, "no_sync") else contextlib.nullcontext()

    def uncompiled(self) -> contextlib.AbstractContextManager:
        """Run `train_model` eagerly: the same modules (and the same gradient synchronization),
        with torch.compile switched off, so forward hooks on the model's submodules fire."""
        return torch.compiler.set_stance("force_eager") if self.fast_model is not self.model else contextlib.nullcontext()


def with_last(items: Iterable) -> Iterator[tuple[object, bool]]:
    """(item, whether it is the last one) for each item."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


def needs_closure(o: torch.optim.Optimizer) -> bool:
    """An optimizer declares that its step needs a closure with `needs_closure = True` (nanogpt/optim.py)."""
    return bool(getattr(o, "needs_closure", False))


def step_optimizers(opts: Optimizers, closure: Callable[[], torch.Tensor] | None = None) -> None:
    """Step the optimizers that need no closure first, on this step's gradients; then those that
    declare one, with the closure (it recomputes every gradient, so it must not run before the others step)."""
    for o in sorted(opts, key=needs_closure):
        if needs_closure(o):
            o.step(closure)
        else:
            o.step()


def wants_eager(opts: Optimizers, step: int) -> bool:
    """Ask every optimizer (all of them: each may arm hooks) whether this step must run uncompiled."""
    return any([o.before_forward(step) for o in opts if hasattr(o, "before_forward")])


def forward_backward(w: Workload, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Forward and backward over this rank's micro-batches, gradients accumulated locally and averaged
    over ranks during the last one's backward; returns this rank's mean loss (a detached 0-d tensor)."""
    loss_sum = torch.zeros((), device=w.ctx.device)
    for (x, y), last in with_last(batches):
        with contextlib.nullcontext() if last else w.no_sync():
            with w.autocast():
                loss = w.train_model(x, y) / w.accum
            loss.backward()
        loss_sum += loss.detach()
    return loss_sum


def train_step(w: Workload, opts: Optimizers, step: int, batches: MicroBatches, lr_mult: float,
               opt_timer: RegionTimer | None = None, optimizer_step: Callable[..., None] = step_optimizers) -> float:
    """Forward and backward over this rank's micro-batches, set the learning rate, step the optimizers;
    returns the step's mean train loss over all ranks. A step an optimizer asks to see eagerly
    (before_forward) runs uncompiled. An optimizer that declares `needs_closure` gets a closure that
    zeroes the gradients and re-runs the same forward and backward (same micro-batches, same mode)
    at the current weights, returning the loss: it runs inside the step, so its cost is timed.
    `optimizer_step` lets a diagnostic observe the optimizers' step; it is not timed differently."""
    batches = list(batches)
    mode = w.uncompiled if wants_eager(opts, step) else contextlib.nullcontext
    with mode():
        loss_sum = forward_backward(w, batches)

    def closure() -> torch.Tensor:
        w.model.zero_grad(set_to_none=True)
        with torch.enable_grad(), mode():
            return forward_backward(w, batches)

    set_lr(opts, lr_mult)
    with opt_timer if opt_timer is not None else contextlib.nullcontext():
        if any(needs_closure(o) for o in opts):
            optimizer_step(opts, closure=closure)
        else:
            optimizer_step(opts)
    w.model.zero_grad(set_to_none=True)
    return distributed.all_reduce_sum(loss_sum).item() / w.ctx.world_size


def set_training(opts: Optimizers, training: bool) -> None:
    """`train()` or `eval()` on every optimizer that has them (schedule-free methods swap the model's
    weights to their averaged point for evaluation and back). Called with the clock stopped."""
    for o in opts:
        if hasattr(o, "train") and hasattr(o, "eval"):
            (o.train if training else o.eval)()


@torch.no_grad()
def evaluate(w: Workload, val: torch.Tensor, batch: int) -> float:
    """Exact per-token mean loss over the fixed validation windows, shared across ranks."""
    mine = val[w.ctx.rank :: w.ctx.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=w.ctx.device)
    for i in range(0, len(mine), batch):
        chunk = mine[i : i + batch].to(w.ctx.device)
        with w.autocast():
            total[0] += w.fast_model(chunk[:, :-1], chunk[:, 1:], reduction="sum").double()
        total[1] += chunk[:, 1:].numel()
    distributed.all_reduce_sum(total)
    return (total[0] / total[1]).item()


def warmup_and_reset(w: Workload, build: Callable[[], Optimizers], next_batch: Callable[[], np.ndarray],
                     reset_data: Callable[[], None], steps: int, val_probe: torch.Tensor, batch: int) -> Optimizers:
    """Untimed steps on real batches and one evaluation (compilation, allocator, autotuning),
    then a full reset: the model's initial weights, fresh optimizers, the data order from its
    start, and the device's peak-memory counter. Returns the fresh optimizers."""
    initial = {k: v.clone() for k, v in w.model.state_dict().items()}
    opts = build()
    for step in range(steps):
        train_step(w, opts, step, w.split(next_batch()), lr_mult=1.0)
    set_training(opts, False)
    evaluate(w, val_probe, batch)
    w.model.load_state_dict(initial)
    reset_data()
    if w.ctx.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return build()


@dataclass
class Outcome:
    """How the timed loop ended."""

    status: str  # ok, diverged or interrupted
    steps_done: int
    last_loss: float
    evals: list[tuple[int, float, float]]  # (step, val loss, train time s)
    train_time_s: float
    opt_time_s: float
    contention: dict  # ContentionMeter.figure() over the timed steps
    interruption: BaseException | None = None  # Ctrl-C, SIGTERM (errors.Terminated) or a peer's failure


def timed_loop(w: Workload, opts: Optimizers, next_batch: Callable[[], np.ndarray], total: int, schedule: dict,
               eval_every: int, run_eval: Callable[[], float], diverge_at: float,
               on_eval: Callable[[int, float, float], None], on_step: Callable[[int, float, float], None]) -> Outcome:
    """The timed run: evaluate on the fixed cadence (and after the last step) with the clock
    stopped, time every training step, stop at the first non-finite or exploding train loss.
    Ctrl-C, SIGTERM (see errors.interrupt_on_sigterm) or the failure of another process of the run
    end it as `interrupted`. The contention meter reads its counters just outside the clock
    around every step. on_eval/on_step(step, loss, train time s) write the log."""
    clock, opt_timer = TrainClock(w.ctx.device), RegionTimer(w.ctx.device)
    meter = ContentionMeter(w.ctx.device, torch.get_num_threads())
    evals: list[tuple[int, float, float]] = []
    status, steps_done, last_loss, interruption = "ok", 0, math.nan, None

    def evaluation(step: int) -> None:
        set_training(opts, False)  # the optimizers' evaluation point (schedule-free: the averaged weights)
        loss = run_eval()
        if step < total:
            set_training(opts, True)  # after the last evaluation the model keeps the weights evaluated (checkpoint)
        evals.append((step, loss, clock.elapsed))
        on_eval(step, loss, clock.elapsed)

    try:
        for step in range(total):
            if step % eval_every == 0:
                evaluation(step)
            meter.start()
            clock.start()
            lr = lr_multiplier(step, total, schedule["warmup_frac"], schedule["cooldown_frac"], schedule["final_lr_mult"])
            last_loss = train_step(w, opts, step, w.split(next_batch()), lr, opt_timer)
            clock.stop()
            meter.stop()
            steps_done = step + 1
            on_step(steps_done, last_loss, clock.elapsed)
            if not math.isfinite(last_loss) or last_loss > diverge_at:
                status = "diverged"
                break
        if status == "ok":
            evaluation(total)
    except (KeyboardInterrupt, dist.DistError) as e:  # DistError: another rank died or left the group
        status, interruption = "interrupted", e
        if clock.started is not None:
            clock.stop()
    return Outcome(status, steps_done, last_loss, evals, clock.elapsed, opt_timer.total_s(), meter.figure(), interruption)
