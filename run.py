#!/usr/bin/env python
"""The speedrun trainer: track -> model -> optimizer -> timed loop -> log + record -> leaderboard.

    python run.py                                    # tiny-cpu, Muon, seed 0
    python run.py --optimizer adamw --seed 1 --set lr=0.004
    python run.py --optimizer path/to/my_opt.py
    torchrun --standalone --nproc_per_node=8 run.py --track gpt2-small

Your runs go to runs/ (git-ignored); the official board in records/ is written by
scripts/submit.py and scripts/sweep.py, or here with --records-dir records.

Timing rules (DESIGN.md §5): only training steps are timed; compilation is excluded by untimed
warmup steps followed by a full reset of model, optimizer and data order; evaluation runs on the
track's fixed cadence while the clock is stopped; the device is synchronized before the clock is read.
The step loop itself is nanogpt/train.py.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys

import torch

import optimizers
from nanogpt import distributed
from nanogpt.checkpoint import checkpoint_path, save_checkpoint
from nanogpt.cli import add_config_arguments, spec_from_args
from nanogpt.contention import machine_figure
from nanogpt.data import TokenStream, split_batch, train_sampler, validation_sequences
from nanogpt.errors import UserError, entry_point, interrupt_on_sigterm, interrupted_exit_code
from nanogpt.model import GPT, compiled
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer
from nanogpt.recording import Recording, check_records_dir
from nanogpt.runlog import eval_line, expert_load_line, train_line
from nanogpt.timing import peak_memory_mb
from nanogpt.tracks import OFFICIAL_RECORDS, PERSONAL_RUNS, TRACKS, get_track, offline_data_dir, prepare_hint
from nanogpt.train import Workload, evaluate, timed_loop, warmup_and_reset


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time an optimizer to a track's target validation loss.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="controls initialisation and data order")
    p.add_argument("--records-dir", default=str(PERSONAL_RUNS),
                   help=f"records table and logs; your runs go to runs/ (git-ignored), the official board is {OFFICIAL_RECORDS.name}/")
    p.add_argument("--list", action="store_true", help="list tracks and optimizers with their defaults")
    p.add_argument("--quiet", action="store_true", help="no progress lines and no leaderboard (the result and the log path still print)")
    p.add_argument("--save-checkpoint", action="store_true",
                   help="save the final model and its configuration next to the log (<records-dir>/logs/<run_id>.pt)")
    return p.parse_args(argv)


def list_everything(track_name: str) -> None:
    print("tracks:")
    for t in TRACKS.values():
        print(f"  {t.name:16s} target {t.target:<6} {t.steps:>6} steps (budget {t.max_steps})  {t.hardware:10s} {t.description}")
    track = get_track(track_name)
    print(f"\noptimizers (hyperparameters for track {track.name}; override with --set KEY=VALUE):")
    from optimizers._library import INSTALL_HINT, missing  # only --list needs it: not part of a run's identity

    for name in optimizers.available():
        spec = load_optimizer(name)
        absent = f"  [needs {', '.join(missing(spec.module))}: {INSTALL_HINT}]" if missing(spec.module) else ""
        print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in default_hparams(spec, track).items()) + absent)
    print("  any installed class: --optimizer torch.optim.NAdam or --optimizer heavyball:SOAP (its keyword defaults are "
          "the --set hyperparameters; README 'Library optimizers')")


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


def print_board(track_name: str, target: float, records_dir: str, row: dict) -> None:
    """Best effort: reporting never fails a finished run. The official board of the track, with
    this run beside it, marked, when it was recorded elsewhere."""
    try:
        from analysis.leaderboard import board_after_run  # reporting code is loaded only to print

        print(board_after_run(OFFICIAL_RECORDS, track_name, target, row, records_dir))
    except BrokenPipeError:
        pass  # nobody reads the output any more
    except Exception as e:  # a bad table, a missing optional package: the run is recorded either way
        print(f"(leaderboard not shown: {type(e).__name__}: {e})")


@entry_point()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            list_everything(args.track)
            return 0
        with interrupt_on_sigterm():
            code = train(args)
        distributed.barrier()
        return code
    finally:
        distributed.shutdown()


def offline_debug_shards(args: argparse.Namespace) -> None:
    """A debug run of a GPT-2 track on a machine without FineWeb reads the local GPT-2 shards
    (nanogpt.runspec.resolve): build them here the first time (a few seconds, no download)."""
    folder = offline_data_dir(get_track(args.track)) if args.debug_model and not args.data_dir else None
    if folder is not None and not folder.is_dir():
        from data.make_local_gpt2_shards import build_once

        print(f"no FineWeb shards for {args.track}: the debug run reads local GPT-2 shards; building them once "
              f"(python data/make_local_gpt2_shards.py)", flush=True)
        build_once(folder)


def train(args: argparse.Namespace) -> int:
    # ---- configuration, and everything a run needs checked before any compilation -------------
    offline_debug_shards(args)
    spec = spec_from_args(args)  # also reads the sources to embed
    track, opt_spec, hp = spec.track, spec.optimizer, spec.hparams
    if track.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"track {track.name} runs on GPUs ({track.hardware}) but no CUDA device is available; "
                        "use --track tiny-cpu, or add --debug-model for a tiny smoke test of this track")
    check_records_dir(args.records_dir)
    ctx = distributed.init(track.device)
    if ctx.device == "cpu" and ctx.world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))))
    diverge_at = track.diverge_loss or 1.5 * math.log(track.model.vocab_size)

    # ---- data, model, optimizer ------------------------------------------------------------------
    train_stream = TokenStream(track.resolve(track.train_files), prepare_hint(track))
    track.check_train_files(train_stream.files)
    val = validation_sequences(TokenStream(track.resolve(track.val_files), prepare_hint(track)), track.val_tokens, track.seq_len)
    sampler = train_sampler(track.sampler, train_stream, track.seq_len, track.batch_size, args.seed, track.sampler_ranks)
    torch.manual_seed(args.seed)
    model = GPT(track.model).to(ctx.device)
    micro, accum = split_batch(track.batch_size, ctx.world_size, track.micro_batch_size)
    # As the records: DistributedDataParallel around the compiled model (no wrapper in one process).
    w = Workload(model, compiled(model) if track.compile else model, ctx, micro, accum, track.dtype)

    # ---- untimed warmup (compilation, allocator), then a full reset; the machine figure ---------
    opts = warmup_and_reset(w, lambda: build_optimizers(opt_spec, model, hp), sampler.next_global_batch, sampler.reset,
                            track.warmup_steps, val[: track.micro_batch_size * ctx.world_size], track.micro_batch_size)
    calib_ms = machine_figure(model, track.model.vocab_size, micro, track.seq_len, ctx.device, w.autocast)

    # ---- the run log ------------------------------------------------------------------------------
    rec = Recording(spec, args.records_dir, args.seed, environment(ctx), flops_per_token=model.flops_per_token(track.seq_len),
                    diverge_at=diverge_at, params=model.param_counts(), write=ctx.is_main)
    model.expert_load()  # an MoE model's routing counters start after the warmup's evaluation

    def say(text: str, always: bool = False) -> None:
        if ctx.is_main and (always or not args.quiet):
            try:
                print(text, flush=True)
            except BrokenPipeError:  # output piped into `head`: keep training and recording, stop printing
                sys.stdout = open(os.devnull, "w")

    def on_eval(step: int, loss: float, elapsed: float) -> None:
        line = eval_line(step, track.steps, loss, elapsed)
        rec.line(line)
        say(line)
        if loads := model.expert_load():  # an MoE model: how this evaluation's tokens were routed, all ranks
            rec.line(expert_load_line(step, distributed.all_reduce_sum(torch.stack(loads)).tolist()))

    progress_every = max(1, track.steps // 20)

    def on_step(done: int, loss: float, elapsed: float) -> None:
        rec.line(train_line(done, track.steps, loss, elapsed))
        if done % progress_every == 0:
            eta = elapsed / done * (track.steps - done)
            say(f"  step {done}/{track.steps}  loss {loss:.4f}  train_time {elapsed:.1f}s  ETA {eta:.0f}s")

    # ---- the timed loop ----------------------------------------------------------------------------
    say(f"run {rec.run_id}: {track.name} / {opt_spec.name} / seed {args.seed}, {track.steps} steps, target {track.target}")
    out = timed_loop(w, opts, sampler.next_global_batch, track.steps, hp, track.eval_every,
                     lambda: evaluate(w, val, track.micro_batch_size), diverge_at, on_eval, on_step)

    # ---- record -----------------------------------------------------------------------------------
    checkpoint = None
    if args.save_checkpoint and out.status == "ok" and ctx.is_main:  # after the clock stopped; rank 0 holds the full model
        checkpoint = save_checkpoint(checkpoint_path(args.records_dir, rec.run_id), model, track=track, run_id=rec.run_id,
                                     optimizer=opt_spec.name, hparams=hp, seed=args.seed, steps=out.steps_done,
                                     val_loss=out.evals[-1][1])
    if not ctx.is_main:
        return 0 if out.status == "ok" else 1
    measured = {"opt_step_share": round(out.opt_time_s / out.train_time_s, 4) if out.train_time_s > 0 else None,
                "peak_mem_mb": round(peak_memory_mb(ctx.device), 1), "calib_ms": calib_ms, **out.contention,
                "checkpoint": None if checkpoint is None else rec.relative(checkpoint)}
    row = rec.finish(out.status, measured)
    if out.status == "diverged":
        print(f"error: run diverged at step {out.steps_done} (train loss {out.last_loss:.4g}); recorded as 'diverged' in "
              f"{rec.path}. Lower the learning rate (--set lr=...)", file=sys.stderr)
        return 1
    if out.status == "interrupted":
        cause = out.interruption if isinstance(out.interruption, KeyboardInterrupt) else "another process of the run failed"
        print(f"interrupted ({cause or 'Ctrl-C'}) at step {out.steps_done}; recorded as 'interrupted' in {rec.path}", file=sys.stderr)
        return interrupted_exit_code(out.interruption) if isinstance(out.interruption, KeyboardInterrupt) else 1
    say(f"\nfinal val loss {row['final_val_loss']:.4f} after {out.steps_done} steps, train time {out.train_time_s:.1f}s "
        f"({row['step_time_ms']:.1f} ms/step, optimizer {100 * (row['opt_step_share'] or 0):.1f}%), "
        f"peak memory {row['peak_mem_mb']:.0f} MB", always=True)
    say(f"target {track.target}: " + (f"reached at step {row['steps_to_target']}, {row['time_to_target_s']:.1f}s"
                                      if row["reached_target"] else "not reached"), always=True)
    if row["contended"]:
        say(f"warning: the machine was busy during the timed steps (cpu_util {row['cpu_util']}, cpu_pressure "
            f"{row['cpu_pressure']}, steal {row['steal']}, other GPU processes {row['gpu_other_procs']}): recorded as "
            "contended; a submission does not take it as evidence unless asked to (--accept-contended)", always=True)
    say(f"log: {rec.path}\n", always=True)
    if not args.quiet:
        print_board(track.name, track.target, args.records_dir, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
