"""Getting runs made: launching run.py for a configuration and finding its runs in the table.

Sweeps, submissions and step searches ask for "one completed run per seed of this configuration";
`ensure_runs` reuses what the records table already holds and launches only what is missing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis.records import read_table
from nanogpt.cli import add_config_arguments, spec_from_args
from nanogpt.errors import UserError
from nanogpt.recording import KEY_COLUMNS, group_key
from nanogpt.runspec import RunSpec
from nanogpt.tracks import OFFICIAL_RECORDS, ROOT

Runner = Callable[[list[str]], int]  # run.py's argv -> exit status


def subprocess_runner(nproc: int = 1, save_checkpoint: bool = False, show_output: bool = True) -> Runner:
    """Launch run.py in its own process (with torch.distributed.run when nproc > 1); checkpoints are
    outside the configuration, so runs with and without them are the same experiment. Without
    show_output a run's result lines are dropped (its errors still reach stderr)."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={nproc}"]

    def run(argv: list[str]) -> int:
        extra = ["--save-checkpoint"] if save_checkpoint else []
        return subprocess.run([*launcher, str(ROOT / "run.py"), *argv, *extra], cwd=ROOT,
                              stdout=None if show_output else subprocess.DEVNULL).returncode

    return run


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def matching_runs(df: pd.DataFrame, spec: RunSpec) -> pd.DataFrame:
    """Completed (ok or diverged) runs of exactly this configuration."""
    if df.empty:
        return df
    key = spec.key()
    same = df[KEY_COLUMNS].apply(lambda r: group_key(r) == key, axis=1)
    return df[same & (df["status"] != "interrupted")]


@dataclass
class Made:
    """What `ensure_runs` did: the rows (one per seed, in seed order) and what it launched."""

    rows: list[dict]
    launched: int = 0
    cpu_s: float = 0.0


def ensure_runs(spec: RunSpec, seeds: list[int], records_dir: str, runner: Runner, collect_only: bool = False) -> Made:
    """One completed run per seed: reuse the table's run for a seed, else launch one (unless
    collect_only). A seed run twice in this configuration is refused: picking one would be cherry-picking."""
    made = Made(rows=[])
    for seed in seeds:
        have = matching_runs(read_table(records_dir), spec)
        have = have[have["seed"] == seed]
        if len(have) > 1:
            raise UserError(f"seed {seed} was run {len(have)} times in this configuration ({', '.join(have['run_id'])}); "
                            "a submission uses each seed once: name the runs to use with --runs")
        if len(have) == 0:
            if collect_only:
                raise UserError(f"no completed run of this configuration with seed {seed} in {records_dir}; "
                                "run it first or drop --collect-only")
            before = set(read_table(records_dir)["run_id"])
            cpu0 = children_cpu_seconds()
            code = runner(spec.argv(seed, records_dir))
            made.cpu_s += children_cpu_seconds() - cpu0
            made.launched += 1
            have = matching_runs(read_table(records_dir), spec)
            have = have[(have["seed"] == seed) & ~have["run_id"].isin(before)]
            if len(have) != 1:
                raise UserError(f"run.py {' '.join(spec.argv(seed, records_dir))} exited with status {code} and recorded "
                                "no completed run of this configuration (interrupted, a bad argument, or the code changed meanwhile)")
        made.rows.append(have.iloc[0].to_dict())
    return made


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,1,5' or '3' -> list of seeds; a repeated seed is refused."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected a list like 0,1,2 or a range like 0-4") from None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text!r}: seed {repeated[0]} appears twice; each seed is one independent run")
    if not seeds:
        raise UserError("--seeds: give at least one seed")
    return seeds


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """run.py's configuration flags, plus how many processes a run uses and where the runs go
    (the official records/ by default: sweeps and submissions are the way records are made)."""
    add_config_arguments(p)
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torch.distributed.run when > 1)")
    p.add_argument("--records-dir", default=str(OFFICIAL_RECORDS), help="records table and logs")
    p.add_argument("--save-checkpoint", action="store_true", help="runs launched now save their final model (for scripts/robustness.py)")


def launch_spec(args: argparse.Namespace) -> RunSpec:
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: must be at least 1")
    return spec_from_args(args, args.nproc)
