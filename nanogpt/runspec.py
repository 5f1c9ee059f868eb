"""What a run is before it runs.

`resolve` turns command-line choices (track, optimizer, --set, --steps, --no-compile) into the
exact configuration run.py will use, so that sweeps, submissions and step searches know the
configuration key of a run before launching it: that is how they skip runs already in the
records table and how they refuse to mix configurations. run.py uses the same function.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from nanogpt.config import JUDGING_FIELDS
from nanogpt.errors import UserError
from nanogpt.identity import closure, third_party
from nanogpt.optim import OptimizerSpec, apply_overrides, default_hparams, load_optimizer
from nanogpt.recording import SCHEMA_VERSION, group_key, hparams_text
from nanogpt.runlog import code_sha256, combined_sha256, harness_files, manifest, optimizer_section, read_sources
from nanogpt.tracks import ROOT, Track, debug_variant, get_track, local_data_variant, offline_data_dir

LIBRARY_GLUE = "optimizers/_library.py"


def track_config(track: Track) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(track)))


def track_sha256(track: Track) -> str:
    """The track's part of a configuration's identity: every field that shapes what a run computes
    (the judging fields are left out: nanogpt.config.JUDGING_FIELDS)."""
    identity = {k: v for k, v in track_config(track).items() if k not in JUDGING_FIELDS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RunSpec:
    """A resolved configuration: everything that defines a run except its seed."""

    track: Track
    optimizer: OptimizerSpec
    hparams: dict
    world_size: int
    sources: dict[str, str]  # section title -> source text, as embedded in the log
    harness: list[str]  # the titles that make up the harness hash, in order
    code: list[str]  # the titles that make up the optimizer's code hash: its module, then the project modules it imports
    packages: dict[str, dict]  # third-party packages the optimizer imports: distribution, version, sha256 of their files
    cli: tuple[str, ...]  # run.py arguments that reproduce it (without seed and records folder)

    @property
    def manifest(self) -> dict[str, dict]:
        return manifest(self.sources)

    @property
    def harness_sha256(self) -> str:
        return combined_sha256(self.harness, self.manifest)

    @property
    def code_sha256(self) -> str:
        return code_sha256(self.code, self.manifest, self.packages)

    def key_values(self) -> dict:
        return {"track": self.track.name, "track_sha256": track_sha256(self.track), "optimizer": self.optimizer.name,
                "code_sha256": self.code_sha256, "harness_sha256": self.harness_sha256,
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
            "world_size": world_size, "code_sha256": self.code_sha256, "harness_sha256": self.harness_sha256,
            "harness_files": self.harness, "code_files": self.code, "packages": self.packages, "sources": self.manifest,
        }

    def argv(self, seed: int, records_dir: str) -> list[str]:
        return [*self.cli, "--seed", str(seed), "--records-dir", str(records_dir), "--quiet"]


def resolve(track_name: str, optimizer: str, sets: list[str], steps: int | None = None, no_compile: bool = False,
            world_size: int = 1, debug_model: bool = False, data_dir: str | None = None) -> RunSpec:
    """Resolve the choices exactly as run.py does: track defaults < optimizer defaults < tuned
    values for the track < --set < --steps. --debug-model and --data-dir make an unofficial variant
    with its own track name ('<track>~debug', '<track>~local') that keeps the real track's tuned values.
    A debug run of a GPT-2 track on a machine without its FineWeb shards reads the local GPT-2 shards
    (tracks.offline_data_dir; run.py builds them first when they are missing)."""
    base = track = get_track(track_name)
    if debug_model:
        import torch  # only a debug run asks which device it may use

        track = debug_variant(track, "cuda" if torch.cuda.is_available() else "cpu")
    folder = data_dir or (offline_data_dir(base) if debug_model else None)
    if folder:
        track = local_data_variant(track, folder)
    if no_compile:
        track = track.with_overrides(compile=False)
    opt = load_optimizer(optimizer)
    if steps is not None and any(item.split("=", 1)[0].strip() == "steps" for item in sets):
        raise UserError("--steps and --set steps=... both set the schedule length; give one of them")
    hp = default_hparams(opt, base)  # the real track's tuned values, its schedule length included
    if debug_model:
        hp["steps"] = track.steps  # a smoke test keeps its own short schedule
    hp = apply_overrides(hp, [*sets, *([] if steps is None else [f"steps={steps}"])], track.max_steps)
    track = track.with_overrides(steps=hp["steps"])
    harness = harness_files(ROOT)
    # an installed class: its defining file is embedded and hashed; its package by name, version and files
    # and so is the glue that runs it (LIBRARY_GLUE), which the harness imports only for such a class
    if opt.library_class:
        deps, others = [LIBRARY_GLUE, *closure(ROOT / LIBRARY_GLUE, ROOT)[0]], []
    else:
        deps, others = closure(opt.path, ROOT)
    section = optimizer_section(f"{opt.name} ({opt.path.name})" if opt.library_class else opt.path.name)
    code = [section, *deps]
    sources = {**read_sources(ROOT, harness), section: opt.source, **read_sources(ROOT, deps)}
    packages = third_party(sorted({*others, *getattr(opt.module, "LIBRARIES", ())}))
    # absolute, as run.py is launched from the repository root
    by_name = opt.shipped or opt.library_class
    cli = ["--track", track_name, "--optimizer", optimizer if by_name else str(opt.path), *(a for s in sets for a in ("--set", s))]
    cli += [] if steps is None else ["--steps", str(steps)]
    cli += ["--no-compile"] if no_compile else []
    cli += ["--debug-model"] if debug_model else []
    cli += ["--data-dir", str(Path(data_dir).resolve())] if data_dir else []
    return RunSpec(track, opt, hp, world_size, sources, harness, code, packages, tuple(cli))
