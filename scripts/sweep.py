"""Hyperparameter sweep: a grid or a random search, several seeds per trial, every trial a
recorded run.py run; resumable (rerun the same command: recorded runs are reused).

    python scripts/sweep.py --optimizer muon --grid lr=0.01,0.02,0.04 --grid weight_decay=0,0.01 --seeds 0,1
    python scripts/sweep.py --optimizer adamw --random lr=log:1e-3:1e-1 --random adam_beta2=0.9:0.999 --trials 8 --seeds 0
    python scripts/sweep.py ... --launcher slurm --partition gpu    # every missing run at once, one Slurm job each

Random ranges: NAME=LO:HI (uniform), NAME=log:LO:HI (log-uniform), NAME=choice:A,B (integer
hyperparameters are rounded). The search's trials, winner and tuning budget (trials, runs,
device-seconds) are appended to records/sweeps.jsonl; the leaderboard shows the budget next to
the winning configuration.
"""

from __future__ import annotations

import argparse
import sys

from analysis.launch import Launcher, Runner, add_run_arguments, launch_spec, make_launcher, parse_seeds
from analysis.submissions import RULES
from analysis.sweeps import grid_trials, parse_grid, parse_random, random_trials, run_sweep, submit_command
from nanogpt.errors import UserError, entry_point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Grid or random hyperparameter search over recorded runs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2", help="grid values of one hyperparameter (repeatable)")
    p.add_argument("--random", action="append", default=[], metavar="NAME=SPEC", help="random-search range (repeatable)")
    p.add_argument("--trials", type=int, default=8, help="random-search trials")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--seeds", default="0", help="run seeds per trial, e.g. 0,1")
    p.add_argument("--rule", choices=RULES, default=None, help="the rule that picks the winner (default: the track's)")
    return p.parse_args(argv)


@entry_point("interrupted; rerun the same command to resume (recorded runs are reused)")
def main(argv: list[str] | None = None, runner: Runner | Launcher | None = None) -> int:
    args = parse_args(argv)
    if bool(args.grid) == bool(args.random):
        raise UserError("give --grid NAME=V1,V2 ... or --random NAME=SPEC ... (one kind of search)")
    seeds = parse_seeds(args.seeds)
    base = launch_spec(args)
    if args.grid:
        grid = parse_grid(args.grid)
        trials, search = grid_trials(grid), {"grid": grid}
    else:
        trials = random_trials(parse_random(args.random), args.trials, args.search_seed, base.hparams)
        search = {"random": args.random, "trials": args.trials, "search_seed": args.search_seed}
    entry = run_sweep(args.track, args.optimizer, args.set, args.steps, args.no_compile, args.nproc, trials, search, seeds,
                      args.records_dir, runner or make_launcher(args),
                      debug_model=args.debug_model, data_dir=args.data_dir, rule_name=args.rule)
    b = entry["budget"]
    print(f"budget: {b['trials']} trials, {b['runs']} runs, {b['device_s']:.0f} device-seconds of training "
          f"({b['launched_now']} runs launched now, {b['process_cpu_s_now']:.0f} CPU-s)")
    if entry["winner"] is None:
        print("no winner: every trial diverged")
        return 1
    w = entry["winner"]
    print(f"winner ({w['criterion']}): " + " ".join(f"--set {k}={v}" for k, v in w["overrides"].items()) + f"  [group {w['group']}]")
    print(f"next: {submit_command(entry, rule=args.rule)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
