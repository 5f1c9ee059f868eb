"""Per-optimizer speed on a track: tokens/s, mean step time, the optimizer step's share of it,
peak memory. Each measurement is a real `run.py` run in its own process (so peak memory is the
optimizer's own), in a throw-away records folder; repeats are summarised by their median.
`--from-records DIR` summarises the completed runs already recorded there instead (the tuning
and submission runs of a machine are dozens of full-length measurements).

    python scripts/bench.py [--track tiny-cpu] [--optimizers muon,adamw] [--steps 40] [--repeats 3]
    python scripts/bench.py --from-records records

Time it alone: any other load on a 2-core machine slows torch steps several-fold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import pandas as pd

import optimizers
from analysis.launch import ensure_runs, subprocess_runner
from analysis.records import read_table
from nanogpt.errors import entry_point
from nanogpt.runspec import resolve
from nanogpt.tracks import get_track

STEPS, REPEATS = 40, 3  # per run, runs per optimizer


def summarize(runs: pd.DataFrame) -> dict:
    """Medians over the completed runs of one optimizer (one device)."""
    tokens_per_step = (runs["tokens"] / runs["steps"]).iloc[0]
    step_ms = runs["step_time_ms"].median()
    return {
        "optimizer": runs["optimizer"].iloc[0],
        "runs": len(runs),
        "device": ", ".join(sorted(set(runs["device"].astype(str)))),
        "tokens_per_s": tokens_per_step / step_ms * 1000,
        "step_ms": step_ms,
        "step_ms_spread": runs["step_time_ms"].max() - runs["step_time_ms"].min(),
        "opt_share_pct": 100 * runs["opt_step_share"].median(),
        "peak_mem_mb": runs["peak_mem_mb"].median(),
    }


def print_row(r: dict) -> None:
    print(f"| {r['optimizer']} | {r['runs']} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | {r['step_ms_spread']:.1f} | "
          f"{r['opt_share_pct']:.1f}% | {r['peak_mem_mb']:.0f} | {r['device']} |", flush=True)


def description() -> str:
    n = len(optimizers.available())
    return ("Per-optimizer speed on a track: tokens/s, mean step time, the optimizer step's share of it, peak memory. "
            f"Launches fresh run.py processes, one after another: by default {REPEATS} runs of {STEPS} steps for each of the {n} "
            f"optimizers ({REPEATS * n} runs); --from-records DIR summarises the completed runs recorded in DIR instead "
            "and launches nothing. "
            "Time it alone: any other load on a 2-core machine slows torch steps several-fold.")


@entry_point(interrupted="interrupted: the rows printed so far are complete; the measurements' records folders were temporary")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(), formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--track", default="tiny-cpu", help="track to measure")
    parser.add_argument("--optimizers", default=",".join(optimizers.available()), help="comma-separated optimizer names")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per optimizer (seeds 0, 1, ...); the median is reported")
    parser.add_argument("--no-compile", action="store_true", help="pass --no-compile to run.py")
    parser.add_argument("--from-records", metavar="DIR", default=None, help="summarise the runs recorded in DIR; launch nothing")
    args = parser.parse_args(argv)
    track = get_track(args.track)
    names = args.optimizers.split(",")
    if args.from_records:
        print(f"track {track.name}: completed runs recorded in {args.from_records}")
    else:
        print(f"track {track.name}: {track.tokens_per_step} tokens/step, {args.steps} timed steps x {args.repeats} runs, "
              f"compile {'off' if args.no_compile else track.compile}")
    print("| optimizer | runs | tokens/s | step (ms, median) | spread (ms) | optimizer step share | peak memory (MB) | device |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    recorded = read_table(args.from_records) if args.from_records else None
    for name in names:
        if recorded is not None:
            df = recorded
        else:
            spec = resolve(track.name, name, [], args.steps, args.no_compile)
            with tempfile.TemporaryDirectory() as scratch:
                ensure_runs(spec, list(range(args.repeats)), scratch, subprocess_runner(show_output=False))
                df = read_table(scratch)
        runs = df[(df["track"] == track.name) & (df["optimizer"] == name) & (df["status"] == "ok")]
        if not runs.empty:
            print_row(summarize(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
