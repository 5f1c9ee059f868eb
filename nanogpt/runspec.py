"""What a run is before it runs, and getting runs made.

`resolve` turns command-line choices (track, optimizer, --set, --steps, --no-compile) into the
exact configuration run.py will use, so that sweeps, submissions and step searches know the
configuration key of a run before launching it: that is how they skip runs already in the
records table and how they refuse to mix configurations. run.py uses the same function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from nanogpt.errors import UserError
from nanogpt.optim import OptimizerSpec, apply_overrides, default_hparams, load_optimizer
from nanogpt.records import KEY_COLUMNS, SCHEMA_VERSION, group_key, hparams_text, read_table
from nanogpt.runlog import combined_sha256, harness_files, manifest, optimizer_section, read_sources
from nanogpt.tracks import ROOT, Track, debug_variant, get_track, local_data_variant

Runner = Callable[[list[str]], int]  # run.py's argv -> exit status


def track_config(track: Track) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(track)))


def track_sha256(track: Track) -> str:
    return hashlib.sha256(json.dumps(track_config(track), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RunSpec:
    """A resolved configuration: everything that defines a run except its seed."""

    track: Track
    optimizer: OptimizerSpec
    hparams: dict
    world_size: int
    sources: dict[str, str]  # section title -> source text, as embedded in the log
    harness: list[str]  # the titles that make up the harness hash, in order
    cli: tuple[str, ...]  # run.py arguments that reproduce it (without seed and records folder)

    @property
    def manifest(self) -> dict[str, dict]:
        return manifest(self.sources)

    @property
    def harness_sha256(self) -> str:
        return combined_sha256(self.harness, self.manifest)

    def key_values(self) -> dict:
        return {"track": self.track.name, "track_sha256": track_sha256(self.track), "optimizer": self.optimizer.name,
                "code_sha256": self.optimizer.sha256, "harness_sha256": self.harness_sha256,
                "hparams": hparams_text(self.hparams), "world_size": self.world_size}

    def key(self) -> tuple[str, ...]:
        return group_key(self.key_values())

    def config(self, *, run_id: str, seed: int, date: str, world_size: int, flops_per_token: int, diverge_at: float) -> dict:
        """The log's config section: everything needed to recompute the run's row from its training lines."""
        return {
            "schema_version": SCHEMA_VERSION, "run_id": run_id, "date": date, "track": self.track.name,
            "optimizer": self.optimizer.name, "seed": seed, "steps": self.track.steps, "hparams": self.hparams,
            "track_config": track_config(self.track), "track_sha256": track_sha256(self.track), "target": self.track.target,
            "tokens_per_step": self.track.tokens_per_step, "flops_per_token": flops_per_token, "diverge_at": diverge_at,
            "world_size": world_size, "code_sha256": self.optimizer.sha256, "harness_sha256": self.harness_sha256,
            "harness_files": self.harness, "sources": self.manifest,
        }

    def argv(self, seed: int, records_dir: str) -> list[str]:
        return [*self.cli, "--seed", str(seed), "--records-dir", str(records_dir), "--quiet"]


def resolve(track_name: str, optimizer: str, sets: list[str], steps: int | None = None, no_compile: bool = False,
            world_size: int = 1, debug_model: bool = False, data_dir: str | None = None) -> RunSpec:
    """Resolve the choices exactly as run.py does: track defaults < optimizer defaults < tuned
    values for the track < --set < --steps. --debug-model and --data-dir make an unofficial variant
    with its own track name ('<track>~debug', '<track>~local') that keeps the real track's tuned values."""
    base = track = get_track(track_name)
    if debug_model:
        import torch  # only a debug run asks which device it may use

        track = debug_variant(track, "cuda" if torch.cuda.is_available() else "cpu")
    if data_dir:
        track = local_data_variant(track, data_dir)
    if no_compile:
        track = track.with_overrides(compile=False)
    opt = load_optimizer(optimizer)
    steps_flag = [] if steps is None else [f"steps={steps}"]
    hp = apply_overrides({**default_hparams(opt, base), "steps": track.steps}, [*sets, *steps_flag], track.max_steps)
    track = track.with_overrides(steps=hp["steps"])
    harness = harness_files(ROOT)
    sources = {**read_sources(ROOT, harness), optimizer_section(opt.path.name): opt.source}
    by_path = optimizer.endswith(".py") or "/" in optimizer  # absolute, as run.py is launched from the repository root
    cli = ["--track", track_name, "--optimizer", str(opt.path) if by_path else optimizer, *(a for s in sets for a in ("--set", s))]
    cli += [] if steps is None else ["--steps", str(steps)]
    cli += ["--no-compile"] if no_compile else []
    cli += ["--debug-model"] if debug_model else []
    cli += ["--data-dir", str(Path(data_dir).resolve())] if data_dir else []
    return RunSpec(track, opt, hp, world_size, sources, harness, tuple(cli))


def subprocess_runner(nproc: int = 1, save_checkpoint: bool = False) -> Runner:
    """Launch run.py in its own process (with torch.distributed.run when nproc > 1); checkpoints are
    outside the configuration, so runs with and without them are the same experiment."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={nproc}"]

    def run(argv: list[str]) -> int:
        extra = ["--save-checkpoint"] if save_checkpoint else []
        return subprocess.run([*launcher, str(ROOT / "run.py"), *argv, *extra], cwd=ROOT).returncode

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


def add_run_arguments(p) -> None:
    """The run.py choices every records script accepts (an argparse parser)."""
    p.add_argument("--track", default="tiny-cpu", help="workload (default: tiny-cpu)")
    p.add_argument("--optimizer", default="muon", help="shipped optimizer name or path to a .py module")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed hyperparameter override (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="schedule length (default: the track's)")
    p.add_argument("--no-compile", action="store_true", help="pass --no-compile to run.py (tests, debugging)")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (torch.distributed.run when > 1)")
    p.add_argument("--records-dir", default=str(ROOT / "records"), help="records table and logs (default: records/)")
    p.add_argument("--save-checkpoint", action="store_true", help="runs launched now save their final model (for scripts/robustness.py)")


def spec_from_args(args) -> RunSpec:
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc}: must be at least 1")
    return resolve(args.track, args.optimizer, args.set, args.steps, args.no_compile, args.nproc)
