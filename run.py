#!/usr/bin/env python
"""The speedrun trainer: track -> model -> optimizer -> timed loop -> log + record -> leaderboard.

    python run.py                                    # tiny-cpu, Muon, seed 0
    python run.py --optimizer adamw --seed 1 --set lr=0.004
    python run.py --optimizer path/to/my_opt.py
    torchrun --standalone --nproc_per_node=8 run.py --track gpt2-small

Timing rules (DESIGN.md §5): only training steps are timed; compilation is excluded by untimed
warmup steps followed by a full reset of model, optimizer and data order; evaluation runs on the
track's fixed cadence while the clock is stopped; the device is synchronized before the clock is read.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import resource
import sys
import uuid
from pathlib import Path

import torch

import optimizers
from analysis.leaderboard import track_markdown
from nanogpt import distributed
from nanogpt.checkpoint import checkpoint_path, save_checkpoint
from nanogpt.data import BatchSampler, TokenStream, micro_batches, split_batch, validation_sequences
from nanogpt.errors import UserError
from nanogpt.model import GPT
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.recording import append_row, build_row
from nanogpt.runlog import RunLog, eval_line, parse_training, train_line
from nanogpt.runspec import resolve
from nanogpt.schedule import lr_multiplier, set_lr
from nanogpt.timing import RegionTimer, TrainClock
from nanogpt.tracks import ROOT, TRACKS, get_track


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time an optimizer to a track's target validation loss.")
    p.add_argument("--track", default="tiny-cpu", help="workload (default: tiny-cpu); see --list")
    p.add_argument("--optimizer", default="muon", help="shipped optimizer name or path to a .py module")
    p.add_argument("--seed", type=int, default=0, help="controls initialisation and data order")
    p.add_argument("--steps", type=int, default=None, help="schedule length, same as --set steps=N (default: the track's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter (repeatable)")
    p.add_argument("--records-dir", default=str(ROOT / "records"), help="records table and logs (default: records/)")
    p.add_argument("--list", action="store_true", help="list tracks and optimizers with their defaults")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (debugging, tests; slower than the track's timing)")
    p.add_argument("--quiet", action="store_true", help="no progress lines and no leaderboard")
    p.add_argument("--save-checkpoint", action="store_true",
                   help="save the final model and its configuration next to the log (records/logs/<run_id>.pt)")
    p.add_argument("--debug-model", action="store_true",
                   help="smoke test: the track shrunk to a tiny model (on CPU when there is no GPU), recorded as '<track>~debug'")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="read the track's shard file names from DIR (e.g. local GPT-2 shards), recorded as '<track>~local'")
    return p.parse_args(argv)


def list_everything(track_name: str) -> None:
    print("tracks:")
    for t in TRACKS.values():
        print(f"  {t.name:16s} target {t.target:<6} {t.steps:>6} steps (budget {t.max_steps})  {t.hardware:10s} {t.description}")
    track = get_track(track_name)
    print(f"\noptimizers (hyperparameters for track {track.name}; override with --set KEY=VALUE):")
    for name in optimizers.available():
        hp = default_hparams(load_optimizer(name), track)
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in hp.items()))


def environment(ctx: distributed.Dist) -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": distributed.device_name(ctx.device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
        "platform": platform.platform(),
    }


@torch.no_grad()
def evaluate(model, val: torch.Tensor, ctx: distributed.Dist, batch: int, autocast) -> float:
    """Exact per-token mean loss over the track's fixed validation tokens, shared across ranks."""
    mine = val[ctx.rank :: ctx.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for i in range(0, len(mine), batch):
        chunk = mine[i : i + batch].to(ctx.device)
        with autocast:
            total[0] += model(chunk[:, :-1], chunk[:, 1:], reduction="sum").double()
        total[1] += chunk[:, 1:].numel()
    distributed.all_reduce_sum(total)
    return (total[0] / total[1]).item()


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            list_everything(args.track)
            return 0
        code = train(args)
        distributed.barrier()
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()


def train(args: argparse.Namespace) -> int:
    # ---- configuration -------------------------------------------------------------------------
    spec = resolve(args.track, args.optimizer, args.set, args.steps, args.no_compile,  # also reads the sources to embed
                   debug_model=args.debug_model, data_dir=args.data_dir)
    track, opt_spec, hp = spec.track, spec.optimizer, spec.hparams
    if track.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"track {track.name} runs on GPUs ({track.hardware}) but no CUDA device is available; "
                        "use --track tiny-cpu, or add --debug-model for a tiny smoke test of this track")
    ctx = distributed.init(track.device)
    if ctx.device == "cpu" and ctx.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))))
    micro, accum = split_batch(track.batch_size, ctx.world_size, track.micro_batch_size)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if track.dtype == "bfloat16" else contextlib.nullcontext())
    diverge_at = track.diverge_loss or 1.5 * math.log(track.model.vocab_size)

    # ---- data, model, optimizer ------------------------------------------------------------------
    train_stream = TokenStream(track.resolve(track.train_files))
    track.check_train_files(train_stream.files)
    val = validation_sequences(TokenStream(track.resolve(track.val_files)), track.val_tokens, track.seq_len)
    sampler = BatchSampler(train_stream, track.seq_len, track.batch_size, args.seed)
    torch.manual_seed(args.seed)
    model = GPT(track.model).to(ctx.device)
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    fast_model = torch.compile(model) if track.compile else model
    opts = build_optimizers(opt_spec, model, hp)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_timer = RegionTimer(ctx.device)

    def train_step(step: int) -> float:
        eager = any([o.before_forward(step) for o in opts if hasattr(o, "before_forward")])
        forward = model if eager else fast_model
        loss_sum = torch.zeros((), device=ctx.device)
        for x, y in micro_batches(sampler.next_global_batch(), ctx.rank, ctx.world_size, micro, ctx.device):
            with autocast:
                loss = forward(x, y) / accum
            loss.backward()
            loss_sum += loss.detach()
        distributed.average_gradients(params)
        set_lr(opts, lr_multiplier(step, track.steps, hp["warmup_frac"], hp["cooldown_frac"], hp["final_lr_mult"]))
        with opt_timer:
            for o in opts:
                o.step()
        model.zero_grad(set_to_none=True)
        return distributed.all_reduce_sum(loss_sum).item() / ctx.world_size

    # ---- untimed warmup (compilation, allocator), then a full reset -----------------------------
    for step in range(track.warmup_steps):
        train_step(step)
    evaluate(fast_model, val[: track.micro_batch_size * ctx.world_size], ctx, track.micro_batch_size, autocast)
    model.load_state_dict(initial_state)
    opts = build_optimizers(opt_spec, model, hp)
    sampler.reset()
    opt_timer = RegionTimer(ctx.device)
    if ctx.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    # ---- the run log ------------------------------------------------------------------------------
    started = datetime.datetime.now(datetime.timezone.utc)
    run_id = f"{started:%Y%m%d-%H%M%S}-{track.name}-{opt_spec.name}-s{args.seed}-{uuid.uuid4().hex[:6]}"
    log_path = Path(args.records_dir) / "logs" / f"{run_id}.txt"
    config = spec.config(run_id=run_id, seed=args.seed, date=started.isoformat(timespec="seconds"), world_size=ctx.world_size,
                         flops_per_token=model.flops_per_token(track.seq_len), diverge_at=diverge_at)
    env = environment(ctx)
    log = RunLog(log_path) if ctx.is_main else None
    if log:
        log.begin(config, env, spec.sources)

    def say(text: str) -> None:
        if ctx.is_main and not args.quiet:
            print(text, flush=True)

    # ---- the timed loop ----------------------------------------------------------------------------
    clock = TrainClock(ctx.device)
    evals: list[tuple[int, float, float]] = []
    status, steps_done, last_loss = "ok", 0, float("nan")

    def run_eval(step: int) -> None:
        loss = evaluate(fast_model, val, ctx, track.micro_batch_size, autocast)
        evals.append((step, loss, clock.elapsed))
        line = eval_line(step, track.steps, loss, clock.elapsed)
        if log:
            log.line(line)
        say(line)

    say(f"run {run_id}: {track.name} / {opt_spec.name} / seed {args.seed}, {track.steps} steps, target {track.target}")
    progress_every = max(1, track.steps // 20)
    try:
        for step in range(track.steps):
            if step % track.eval_every == 0:
                run_eval(step)
            clock.start()
            last_loss = train_step(step)
            clock.stop()
            steps_done = step + 1
            if log:
                log.line(train_line(steps_done, track.steps, last_loss, clock.elapsed))
            if not math.isfinite(last_loss) or last_loss > diverge_at:
                status = "diverged"
                break
            if steps_done % progress_every == 0:
                eta = clock.elapsed / steps_done * (track.steps - steps_done)
                say(f"  step {steps_done}/{track.steps}  loss {last_loss:.4f}  train_time {clock.elapsed:.1f}s  ETA {eta:.0f}s")
        if status == "ok":
            run_eval(track.steps)
    except KeyboardInterrupt:
        status = "interrupted"
        if clock.started is not None:
            clock.stop()

    # ---- record -----------------------------------------------------------------------------------
    checkpoint = None
    if args.save_checkpoint and status == "ok" and ctx.is_main:  # after the clock stopped; rank 0 holds the full model
        checkpoint = save_checkpoint(checkpoint_path(args.records_dir, run_id), model, track=track, run_id=run_id,
                                     optimizer=opt_spec.name, hparams=hp, seed=args.seed, steps=steps_done, val_loss=evals[-1][1])
    if not ctx.is_main:
        return 0 if status == "ok" else 1
    measured = {"opt_step_share": round(opt_timer.total_s() / clock.elapsed, 4) if clock.elapsed > 0 else None,
                "peak_mem_mb": round(peak_memory_mb(ctx.device), 1),
                "checkpoint": None if checkpoint is None else os.path.relpath(checkpoint, args.records_dir)}
    row = build_row(config, env, parse_training(log.training), status, measured, os.path.relpath(log_path, args.records_dir))
    log.finish(row)
    append_row(args.records_dir, row)
    if status == "diverged":
        print(f"error: run diverged at step {steps_done} (train loss {last_loss:.4g}); recorded as 'diverged' in {log_path}. "
              "Lower the learning rate (--set lr=...)", file=sys.stderr)
        return 1
    if status == "interrupted":
        print(f"interrupted at step {steps_done}; recorded as 'interrupted' in {log_path}", file=sys.stderr)
        return 130
    say(f"\nfinal val loss {row['final_val_loss']:.4f} after {steps_done} steps, train time {clock.elapsed:.1f}s "
        f"({row['step_time_ms']:.1f} ms/step, optimizer {100 * (row['opt_step_share'] or 0):.1f}%), "
        f"peak memory {row['peak_mem_mb']:.0f} MB")
    say(f"target {track.target}: " + (f"reached at step {row['steps_to_target']}, {row['time_to_target_s']:.1f}s"
                                      if row["reached_target"] else "not reached"))
    say(f"log: {log_path}\n")
    if not args.quiet:
        print(track_markdown(args.records_dir, track.name, track.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
