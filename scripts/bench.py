"""Per-optimizer speed on a track: tokens/s, mean step time, the optimizer step's share of it,
peak memory. Each measurement is a real `run.py` run in its own process (so peak memory is the
optimizer's own), in a throw-away records folder; repeats are summarised by their median.

    python scripts/bench.py [--track tiny-cpu] [--optimizers muon,adamw] [--steps 40] [--repeats 3]

Time it alone: any other load on a 2-core machine slows torch steps several-fold.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optimizers  # noqa: E402
from nanogpt.records import read_table  # noqa: E402
from nanogpt.tracks import get_track  # noqa: E402


def measure(track: str, optimizer: str, steps: int, repeats: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as records:
        for seed in range(repeats):
            cmd = [sys.executable, str(ROOT / "run.py"), "--track", track, "--optimizer", optimizer, "--steps", str(steps),
                   "--seed", str(seed), "--records-dir", records, "--quiet", *extra]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"error: {optimizer} failed: {done.stderr.strip().splitlines()[-1]}")
        df = read_table(records)
    tokens_per_step = df["tokens"].iloc[0] / df["steps"].iloc[0]
    step_ms = df["step_time_ms"].median()
    return {
        "optimizer": optimizer,
        "tokens_per_s": tokens_per_step / step_ms * 1000,
        "step_ms": step_ms,
        "step_ms_spread": df["step_time_ms"].max() - df["step_time_ms"].min(),
        "opt_share_pct": 100 * df["opt_step_share"].median(),
        "peak_mem_mb": df["peak_mem_mb"].median(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", default="tiny-cpu")
    parser.add_argument("--optimizers", default=",".join(optimizers.available()))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    track = get_track(args.track)
    extra = ["--no-compile"] if args.no_compile else []
    print(f"track {track.name}: {track.tokens_per_step} tokens/step, {args.steps} timed steps x {args.repeats} runs, "
          f"compile {'off' if args.no_compile else track.compile}")
    print("| optimizer | tokens/s | step (ms, median) | spread (ms) | optimizer step share | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.optimizers.split(","):
        r = measure(track.name, name, args.steps, args.repeats, extra)
        print(f"| {r['optimizer']} | {r['tokens_per_s']:,.0f} | {r['step_ms']:.1f} | {r['step_ms_spread']:.1f} | "
              f"{r['opt_share_pct']:.1f}% | {r['peak_mem_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
