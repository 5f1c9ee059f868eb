"""Find the shortest schedule (--steps) that the track's rule admits: the way to make a record.

    python scripts/find_steps.py --optimizer muon --seeds 0-2 [--start 400] [--max-steps 1200] [--tolerance 0.05]
    python scripts/find_steps.py --optimizer mona --seeds 0-2 --start 450 --growth 1.25   # a good first guess
    python scripts/find_steps.py --optimizer muon --seeds 0-2 --rule steps     # under the other rule
    python scripts/find_steps.py --optimizer muon --seeds 0-2 --launcher slurm --partition gpu   # each step count's seeds at once

Each probed step count is run with every seed (recorded runs are reused, so an interrupted
search resumes); a step count passes when its runs would be evidence under the rule: no run
diverged and, under `time`, the mean final val loss is below the target with p < 0.01 (one-sided
t-test), under `steps`, (target - mean) x sqrt(n) >= 0.004 (track 3's fixed sigma). The search
doubles or halves from --start (or multiplies and divides by --growth) to bracket the answer, then narrows the bracket until it is within
--tolerance of it: each next step count is where the line through the bracket's shortfalls (how
far each end's losses are from meeting the rule) crosses zero, less half the tolerance, with a
bisection whenever two probes in a row fail to halve the bracket. Every run is recorded, and the search
(probes, winner, budget) is appended to records/sweeps.jsonl; its budget counts in the tuning
budget that the leaderboard shows for the configuration it picks. Exit status 1 if no step count up
to the maximum meets the target.
"""

from __future__ import annotations

import argparse
import sys

from analysis.launch import Launcher, Runner, add_run_arguments, make_launcher, parse_seeds
from analysis.submissions import RULES
from analysis.sweeps import find_steps, submit_command
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import get_track


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Shortest schedule length that the rule admits.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--seeds", default="0-2", help="seeds per step count (at least 2)")
    p.add_argument("--start", type=int, default=None, help="first step count to try (None: --steps, else the track's)")
    p.add_argument("--max-steps", type=int, default=None, help="largest step count to try (None: the track's step budget)")
    p.add_argument("--tolerance", type=float, default=0.05, help="stop when the bracket is within this fraction")
    p.add_argument("--growth", type=float, default=2.0,
                   help="factor between the bracketing step counts from --start (1.25 saves runs when --start is a good guess)")
    p.add_argument("--rule", choices=RULES, default=None, help="the rule a step count must meet (default: the track's)")
    return p.parse_args(argv)


@entry_point("interrupted; rerun the same command to resume (recorded runs are reused)")
def main(argv: list[str] | None = None, runner: Runner | Launcher | None = None) -> int:
    args = parse_args(argv)
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance {args.tolerance}: must lie in [0, 1)")
    start = args.start or args.steps or get_track(args.track).steps
    runner = runner or make_launcher(args)
    entry = find_steps(args.track, args.optimizer, args.set, args.no_compile, args.nproc, parse_seeds(args.seeds),
                       args.records_dir, runner, start, args.max_steps, args.tolerance, args.rule,
                       debug_model=args.debug_model, data_dir=args.data_dir, growth=args.growth)
    b = entry["budget"]
    print(f"budget: {b['trials']} step counts, {b['runs']} runs, {b['device_s']:.0f} device-seconds of training")
    if entry["winner"] is None:
        print(f"no step count up to {entry['search']['max_steps']} meets the target")
        return 1
    print(f"shortest schedule meeting the target: --steps {entry['winner']['overrides']['steps']}  [group {entry['winner']['group']}]")
    print(f"next: {submit_command(entry, rule=args.rule)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
