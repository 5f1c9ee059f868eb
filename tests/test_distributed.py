"""The distributed path on CPU: 2 Gloo processes under torchrun (gradients averaged by
DistributedDataParallel, no_sync on the accumulation micro-steps) take the same optimizer steps as
1 process that accumulates the same global batch, so their loss trajectories agree (up to float32
summation order): for SGD, which is not scale-invariant (gradients summed instead of averaged over
the ranks would show), for AdamW, for Muon, whose orthogonalization is sharded across the ranks,
and for Newton-Muon refreshing every other step (eager steps with forward hooks on the raw model,
input statistics all-reduced)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import torchrun_two_gloo

import run
from analysis.records import read_table
from nanogpt.data import split_batch
from nanogpt.errors import UserError

LOSS_LINE = re.compile(r"^step:(\d+)/\d+ (train_loss|val_loss):(\S+) ")
# A smoke-size variant of tiny-cpu: batch 8 in micro-batches of 2, so 1 process accumulates 4
# micro-batches and each of 2 processes accumulates 2.
ARGS = ["--track", "tiny-cpu", "--debug-model", "--no-compile", "--steps", "8", "--quiet"]
# The logs print 4 decimals; the rest is float32 summation order (all-reduce vs. local accumulation).
TOLERANCE = 2e-4


def trajectory(records_dir: Path) -> tuple[int, dict[tuple[int, str], float]]:
    """(world size, {(step, kind): loss}) of the only run recorded in records_dir."""
    table = read_table(records_dir)
    assert len(table) == 1 and table.iloc[0].status == "ok", table.to_dict("records")
    lines = (records_dir / table.iloc[0].log).read_text().splitlines()
    losses = {(int(m[1]), m[2]): float(m[3]) for m in map(LOSS_LINE.match, lines) if m}
    return int(table.iloc[0].world_size), losses


@pytest.mark.parametrize("batch, world, max_micro, expected", [
    (16, 1, 16, (16, 1)), (16, 2, 16, (8, 1)), (8, 2, 2, (2, 2)), (8, 1, 2, (2, 4)), (512, 8, 32, (32, 2)), (12, 1, 8, (6, 2)),
])
def test_split_batch_fills_the_global_batch(batch, world, max_micro, expected):
    micro, accum = split_batch(batch, world, max_micro)
    assert (micro, accum) == expected and micro * accum * world == batch and micro <= max_micro


def test_split_batch_refuses_an_uneven_split():
    with pytest.raises(UserError, match="cannot be split evenly over 3 processes"):
        split_batch(16, 3, 16)


@pytest.mark.parametrize("optimizer, sets", [
    ("sgd", []), ("adamw", []), ("muon", []), ("newton_muon", ["--set", "refresh_every=2"]),
])
def test_two_gloo_processes_match_one_process_with_accumulation(optimizer, sets, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run.main([*ARGS, "--optimizer", optimizer, *sets, "--records-dir", str(one)]) == 0
    proc = torchrun_two_gloo([*ARGS, "--optimizer", optimizer, *sets, "--records-dir", str(two)])
    assert proc.returncode == 0, proc.stderr[-3000:]

    (world_one, single), (world_two, double) = trajectory(one), trajectory(two)
    assert (world_one, world_two) == (1, 2)
    assert single.keys() == double.keys() and len([k for k in single if k[1] == "train_loss"]) == 8
    worst = max(abs(single[k] - double[k]) for k in single)
    assert worst <= TOLERANCE, {k: (single[k], double[k]) for k in single}
    assert single[(8, "val_loss")] < single[(0, "val_loss")] - 0.05  # the trajectory is a real one: it learns
