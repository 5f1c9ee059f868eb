"""Getting runs made: launching run.py for a configuration and finding its runs in the table.

Sweeps, submissions and step searches ask for "one completed run per seed of this configuration";
`ensure_runs` reuses what the records table already holds and launches only what is missing.
A launcher makes the missing runs: one after another here (`Sequential`, the default), or all at
once as submitit jobs, on Slurm or on this machine (`Submitit`; README: Sweeps and submissions on
a cluster). Either way each run writes its own log and row, and the table tells what was recorded.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from analysis.progress import Expected, Say, watching
from analysis.records import read_table
from nanogpt.cli import add_config_arguments, spec_from_args
from nanogpt.errors import UserError
from nanogpt.recording import KEY_COLUMNS, group_key
from nanogpt.runspec import RunSpec
from nanogpt.tracks import OFFICIAL_RECORDS, ROOT, get_track

Runner = Callable[[list[str]], int]  # run.py's argv -> exit status


def run_command(argv: list[str], nproc: int = 1, save_checkpoint: bool = False) -> list[str]:
    """The command line of one run: run.py, under torch.distributed.run when nproc > 1;
    checkpoints are outside the configuration, so runs with and without them are the same experiment."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={nproc}"]
    return [*launcher, str(ROOT / "run.py"), *argv, *(["--save-checkpoint"] if save_checkpoint else [])]


def subprocess_runner(nproc: int = 1, save_checkpoint: bool = False, show_output: bool = True) -> Runner:
    """Launch run.py in its own process. Without show_output a run's result lines are dropped
    (its errors still reach stderr)."""

    def run(argv: list[str]) -> int:
        return subprocess.run(run_command(argv, nproc, save_checkpoint), cwd=ROOT,
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


@dataclass(frozen=True)
class Pending:
    """A run to make: a configuration and a seed, and how progress lines and messages name it."""

    spec: RunSpec
    seed: int
    label: str

    def argv(self, records_dir: str) -> list[str]:
        return self.spec.argv(self.seed, records_dir)

    def expected(self) -> Expected:
        return Expected(self.label, self.spec.key(), self.seed, self.spec.track.steps)


@dataclass(frozen=True)
class Outcome:
    """How a launched run ended as its launcher saw it (whether it was recorded, the table says)."""

    status: str  # "exit status 1", "job state FAILED"
    where: str  # the command, or the job and its output files


@runtime_checkable
class Launcher(Protocol):
    """Makes a list of runs and yields their outcomes in order: one at a time (each as its run
    ends), or all at once (once every run has ended)."""

    one_at_a_time: bool

    def run(self, runs: list[Pending], records_dir: str) -> Iterator[Outcome]: ...


class Sequential:
    """One run after another on this machine (the default): each outcome is yielded as its run
    ends, so a failure stops the runs after it (they would most likely fail the same way)."""

    one_at_a_time = True

    def __init__(self, runner: Runner, say: Say | None = None):
        self.runner, self.say = runner, say

    def run(self, runs: list[Pending], records_dir: str) -> Iterator[Outcome]:
        with watching(records_dir, [r.expected() for r in runs], 1, self.say):
            for r in runs:
                code = self.runner(r.argv(records_dir))
                yield Outcome(f"exit status {code}", f"run.py {' '.join(r.argv(records_dir))}")


INDUCTOR_CACHE = "inductor-cache"  # torch.compile's cache for submitit jobs, inside the jobs folder


class Submitit:
    """Every run at once, one submitit job each: Slurm jobs (cluster "slurm") or processes on this
    machine (cluster "local"). A job runs run.py (under torch.distributed.run when nproc > 1) and
    writes its own log and row into the records folder, which must be on a file system every node
    shares; its stdout and stderr land in `folder`. The outcomes come once every job has ended, so
    a failed job does not stop the others; Ctrl-C cancels the jobs (they record 'interrupted')."""

    one_at_a_time = False

    def __init__(self, cluster: str, folder: str, nproc: int, save_checkpoint: bool, parameters: dict, say: Say | None = print):
        self.cluster, self.folder, self.nproc, self.save_checkpoint = cluster, folder, nproc, save_checkpoint
        self.parameters, self.say = parameters, say

    def executor(self):
        import submitit

        try:
            executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        except RuntimeError as e:  # no srun: not on a Slurm cluster
            raise UserError(f"--launcher {self.cluster}: {e} Run the command on the cluster's login node, "
                            "or use --launcher submitit-local here") from None
        executor.update_parameters(name="nanogpt-run", **self.parameters)
        return executor

    def command(self, run: Pending, records_dir: str) -> list[str]:
        """A job's command: run.py's, with torch.compile's cache in the jobs folder unless the
        submitting shell chose one (TORCHINDUCTOR_CACHE_DIR, which Slurm exports to the job). The
        default cache is the node's /tmp: every job on a new node would compile anew (31.5 s of a
        tiny-cpu run's warmup cold, 3.5 s with the cache; scripts/bench_overhead.py)."""
        shared = Path(self.folder).resolve() / INDUCTOR_CACHE
        cache = [] if "TORCHINDUCTOR_CACHE_DIR" in os.environ else ["env", f"TORCHINDUCTOR_CACHE_DIR={shared}"]
        return [*cache, *run_command(run.argv(records_dir), self.nproc, self.save_checkpoint)]

    def run(self, runs: list[Pending], records_dir: str) -> Iterator[Outcome]:
        import submitit

        executor = self.executor()
        with executor.batch():
            jobs = [executor.submit(submitit.helpers.CommandFunction(self.command(r, records_dir), cwd=str(ROOT))) for r in runs]
        if self.say:
            self.say(f"submitted {len(jobs)} {self.cluster} jobs ({', '.join(j.job_id for j in jobs)}); their output goes to {self.folder}")
        try:
            with watching(records_dir, [r.expected() for r in runs], len(jobs), self.say):
                errors = [job.exception() for job in jobs]  # waits for every job
        except KeyboardInterrupt:
            for job in jobs:
                job.cancel(check=False)
            raise
        for job, error in zip(jobs, errors):
            status = f"job state {job.state}" + (f", {type(error).__name__}" if error is not None else "")
            yield Outcome(status, f"{self.cluster} job {job.job_id} (stdout {job.paths.stdout}, stderr {job.paths.stderr})")


@dataclass
class Made:
    """What `ensure_runs` did: the rows (one per seed, in seed order) and what it launched."""

    rows: list[dict]
    launched: int = 0
    cpu_s: float = 0.0


@dataclass
class Batch:
    """What `ensure_many` did: per request its rows (in seed order) and how many runs it launched;
    the CPU time of the processes it waited for (all requests together: they ran together)."""

    rows: list[list[dict]]
    launched: list[int]
    cpu_s: float


def seed_rows(table: pd.DataFrame, spec: RunSpec, seed: int, exclude: set[str] = frozenset()) -> pd.DataFrame:
    have = matching_runs(table, spec)
    return have[(have["seed"] == seed) & ~have["run_id"].isin(exclude)]


def ensure_many(requests: list[tuple[RunSpec, list[int], str]], records_dir: str, launcher: Runner | Launcher,
                collect_only: bool = False) -> Batch:
    """One completed run per (configuration, seed) of every request (spec, seeds, label): reuse the
    table's run, else launch one (unless collect_only). What is missing is launched in one go, so a
    launcher that runs jobs at once runs all of them together. A seed run twice in a configuration
    is refused: picking one would be cherry-picking. Runs that failed are named with where their
    output went; the others are recorded and a rerun launches only what is still missing."""
    if not isinstance(launcher, Launcher):
        launcher = Sequential(launcher)
    launched = [0] * len(requests)
    found: dict[tuple, dict] = {}  # (configuration key, seed) -> row; two trials that draw the same values share their runs
    todo: dict[tuple, tuple[int, Pending]] = {}
    table = read_table(records_dir)
    for i, (spec, seeds, label) in enumerate(requests):
        for seed in seeds:
            if (spec.key(), seed) in found or (spec.key(), seed) in todo:
                continue
            have = seed_rows(table, spec, seed)
            if len(have) > 1:
                raise UserError(f"seed {seed} was run {len(have)} times in this configuration ({', '.join(have['run_id'])}); "
                                "a submission uses each seed once: name the runs to use with --runs")
            if len(have) == 1:
                found[spec.key(), seed] = have.iloc[0].to_dict()
            elif collect_only:
                raise UserError(f"no completed run of this configuration with seed {seed} in {records_dir}; "
                                "run it first or drop --collect-only")
            else:
                todo[spec.key(), seed] = i, Pending(spec, seed, f"{label} seed {seed}" if label else f"seed {seed}")
    before = set(table["run_id"]) if todo else set()
    cpu0, failed = children_cpu_seconds(), []
    for (i, p), outcome in zip(todo.values(), launcher.run([p for _, p in todo.values()], records_dir)):
        launched[i] += 1
        new = seed_rows(read_table(records_dir), p.spec, p.seed, before)
        if len(new) == 1:
            found[p.spec.key(), p.seed] = new.iloc[0].to_dict()
            continue
        failed.append(f"{p.label}: {outcome.where} ended with {outcome.status} and recorded no completed run of this configuration")
        if launcher.one_at_a_time:
            break
    cpu_s = children_cpu_seconds() - cpu0
    if failed:
        recorded = sum(launched) - len(failed)
        raise UserError("; ".join(failed) + " (interrupted, a bad argument, or the code changed meanwhile)"
                        + (f"; the {recorded} other runs launched now were recorded" if recorded else "")
                        + "; rerun the same command to resume (recorded runs are reused)")
    return Batch([[found[spec.key(), seed] for seed in seeds] for spec, seeds, _ in requests], launched, cpu_s)


def ensure_runs(spec: RunSpec, seeds: list[int], records_dir: str, launcher: Runner | Launcher, collect_only: bool = False) -> Made:
    """One completed run per seed of one configuration (`ensure_many`)."""
    batch = ensure_many([(spec, seeds, "")], records_dir, launcher, collect_only)
    return Made(batch.rows[0], batch.launched[0], batch.cpu_s)


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


LAUNCHERS = ("local", "submitit-local", "slurm")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """run.py's configuration flags, plus how many processes a run uses, where the runs go
    (the official records/ by default: sweeps and submissions are the way records are made) and
    how they are launched (one after another here, or at once as submitit jobs)."""
    add_config_arguments(p)
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torch.distributed.run when > 1)")
    p.add_argument("--records-dir", default=str(OFFICIAL_RECORDS), help="records table and logs")
    p.add_argument("--save-checkpoint", action="store_true", help="runs launched now save their final model (for scripts/robustness.py)")
    g = p.add_argument_group("launching (README: Sweeps and submissions on a cluster)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: one run after another here; submitit-local: every missing run at once as processes here; "
                        "slurm: every missing run at once as Slurm jobs (the records folder must be on a shared file system)")
    g.add_argument("--jobs-dir", default=None, help="where submitit keeps each job's stdout/stderr (None: <records-dir>/jobs)")
    g.add_argument("--time", type=int, default=120, help="time limit of a job in minutes (submitit launchers)")
    g.add_argument("--partition", default=None, help="Slurm partition")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs per job (None: --nproc on GPU tracks, none on CPU tracks)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per job (None: the scheduler's default)")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-arg account=myproj --slurm-arg qos=high (repeatable)")


def launch_spec(args: argparse.Namespace) -> RunSpec:
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: must be at least 1")
    return spec_from_args(args, args.nproc)


def slurm_args(items: list[str]) -> dict[str, str]:
    """`--slurm-arg account=myproj` -> {"account": "myproj"} (sbatch's --account=myproj)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--slurm-arg {item!r}: expected KEY=VALUE, e.g. --slurm-arg account=myproj")
        extra[key.strip().removeprefix("--")] = value.strip()
    return extra


def make_launcher(args: argparse.Namespace, say: Say = print) -> Launcher:
    """The launcher the flags ask for; the default runs run.py here, one run after another, as
    the harness always has, and shows the runs' progress from their logs."""
    slurm_only = {"--partition": args.partition, "--slurm-arg": args.slurm_arg}
    if args.launcher != "slurm" and any(slurm_only.values()):
        flag = next(f for f, v in slurm_only.items() if v)
        raise UserError(f"{flag} applies to --launcher slurm only (the launcher is {args.launcher})")
    if args.launcher == "local":
        for flag, value in {"--jobs-dir": args.jobs_dir, "--gpus-per-node": args.gpus_per_node,
                            "--cpus-per-task": args.cpus_per_task}.items():
            if value is not None:
                raise UserError(f"{flag} applies to the submitit launchers only: add --launcher submitit-local or --launcher slurm")
        return Sequential(subprocess_runner(args.nproc, args.save_checkpoint), say)
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError(f"--launcher {args.launcher} needs the submitit package: pip install -e '.[cluster]'") from None
    if args.time <= 0:
        raise UserError(f"--time {args.time}: a job's time limit in minutes must be positive")
    gpus = args.gpus_per_node
    if gpus is None:
        gpus = args.nproc if get_track(args.track).device == "cuda" else 0
    parameters = {"timeout_min": args.time, "tasks_per_node": 1, "nodes": 1}
    if gpus:  # no GPU option at all on a CPU track: clusters without GPUs refuse one, even 0
        parameters["gpus_per_node"] = gpus
    if args.cpus_per_task is not None:
        parameters["cpus_per_task"] = args.cpus_per_task
    if args.launcher == "slurm":
        parameters |= {"slurm_additional_parameters": slurm_args(args.slurm_arg)}
        if args.partition:
            parameters["slurm_partition"] = args.partition
    folder = args.jobs_dir or str(Path(args.records_dir) / "jobs")
    return Submitit(args.launcher.removeprefix("submitit-"), folder, args.nproc, args.save_checkpoint, parameters, say)
