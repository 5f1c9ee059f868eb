"""The run flags, defined once: run.py and every script that launches runs accept the same
choices with the same defaults, and `spec_from_args` resolves them the same way for both."""

from __future__ import annotations

import argparse

from nanogpt.runspec import RunSpec, resolve


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The choices that make a configuration (everything but the seed)."""
    p.add_argument("--track", default="tiny-cpu", help="workload; see run.py --list")
    p.add_argument("--optimizer", default="muon", help="shipped optimizer name or path to a .py module")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="schedule length, same as --set steps=N (default: the submission's)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (debugging, tests; slower than the track's timing)")
    p.add_argument("--debug-model", action="store_true",
                   help="smoke test: the track shrunk to a tiny model (on CPU when there is no GPU), recorded as '<track>~debug'")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="read the track's shard file names from DIR (e.g. local GPT-2 shards), recorded as '<track>~local'")


def spec_from_args(args: argparse.Namespace, world_size: int = 1) -> RunSpec:
    return resolve(args.track, args.optimizer, args.set, args.steps, args.no_compile, world_size,
                   debug_model=args.debug_model, data_dir=args.data_dir)
