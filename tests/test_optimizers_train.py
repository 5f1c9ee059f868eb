"""Every shipped optimizer trains the tiny-cpu model through run.py: finite, decreasing training
loss, single-process and under a 2-process Gloo torchrun. Also the module contract of the
Muon-family modules (paper cited, defaults typed and as documented, state sizes)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import LIBRARY_BASELINES, torchrun_two_gloo

import optimizers
import run
from analysis.records import read_table
from nanogpt import tracks
from nanogpt.model import GPT
from nanogpt.optim import build_optimizers, default_hparams, load_optimizer

TRAIN_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:(\S+) ")
# Exercise each optimizer's special path within a few steps (Newton-Muon refreshes every 32 by default).
EXTRA = {"newton_muon": ["--set", "refresh_every=2"]}
PAPERS = {"normuon": "2510.05491", "muon2": "2604.09967", "muon2f": "2604.09967", "newton_muon": "2604.01472", "mona": "2605.26842"}


# Our own optimizers train through run.py, in one process and in two (sharded orthogonalization,
# Newton-Muon's reduced statistics); the library baselines are tested on a tiny model in
# tests/test_library_optimizers.py, and schedule-free (the evaluation hooks) also here under torchrun.
OWN = [n for n in optimizers.available() if n not in LIBRARY_BASELINES]


def train_losses(records_dir: Path) -> list[float]:
    """The per-step training losses of the only run in records_dir, from its log."""
    table = read_table(records_dir)
    assert len(table) == 1 and table.iloc[0].status == "ok", table.to_dict("records")
    lines = (records_dir / table.iloc[0].log).read_text().splitlines()
    return [float(m.group(2)) for m in map(TRAIN_LINE.match, lines) if m]


def assert_learns(losses: list[float], steps: int) -> None:
    assert len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1 and losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", OWN)
def test_trains_single_process(name, tmp_path, fast_track):
    argv = ["--no-compile", "--steps", "8", "--quiet", "--records-dir", str(tmp_path), "--optimizer", name, *EXTRA.get(name, [])]
    assert run.main(argv) == 0
    assert_learns(train_losses(tmp_path), 8)


@pytest.mark.parametrize("name", [*OWN, "sfadamw"])
def test_trains_under_torchrun_with_two_gloo_processes(name, tmp_path):
    proc = torchrun_two_gloo(["--no-compile", "--debug-model", "--steps", "4", "--records-dir", str(tmp_path), "--quiet",
                              "--optimizer", name, *EXTRA.get(name, [])])
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = read_table(tmp_path)
    assert table.iloc[0].world_size == 2
    losses = train_losses(tmp_path)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_muon_family_modules_follow_the_contract(name):
    spec = load_optimizer(name)
    assert PAPERS[name] in spec.module.__doc__
    defaults = spec.module.DEFAULTS
    assert defaults["momentum_form"] == "damped" and defaults["nesterov"] is True  # harness conventions
    assert defaults["shape_scale"] == "keller" and defaults["ortho_dtype"] == "auto"
    model = GPT(tracks.get_track("tiny-cpu").model)
    opts = build_optimizers(spec, model, default_hparams(spec, tracks.get_track("tiny-cpu")))
    assert isinstance(opts[-1], torch.optim.AdamW)  # embed, head and scalars on the shared auxiliary AdamW
    matrices = {id(p) for n, p in model.named_parameters() if model.param_roles()[n] == "matrix"}
    assert {id(p) for g in opts[0].param_groups for p in g["params"]} == matrices


def state_values(name: str, shape: tuple[int, int]) -> int:
    """Numbers of optimizer state per matrix of `shape` after one step."""
    p = torch.nn.Parameter(torch.randn(shape))
    spec = load_optimizer(name)
    (opt,) = spec.module.build({"matrix": [p], "embed": [], "head": [], "scalar": []}, dict(spec.module.DEFAULTS), None)
    p.grad = torch.randn(shape)
    opt.step()
    return sum(v.numel() for v in opt.state[p].values() if torch.is_tensor(v))


def test_state_sizes_match_the_papers():
    m, n = 48, 12
    assert state_values("muon", (m, n)) == m * n
    assert state_values("muon2", (m, n)) == 2 * m * n
    assert state_values("muon2f", (m, n)) == m * n + m + n
    assert state_values("normuon", (m, n)) == m * n + m  # one value per neuron (rows of a tall matrix)
    assert state_values("normuon", (n, m)) == m * n + m  # columns of a wide one
    assert state_values("mona", (m, n)) == 2 * m * n


def test_muon2_uses_three_newton_schulz_steps_by_default():
    assert load_optimizer("muon2").module.DEFAULTS["ns_steps"] == 3
    assert load_optimizer("muon2f").module.DEFAULTS["ns_steps"] == 3
    assert load_optimizer("muon").module.DEFAULTS["ns_steps"] == 5
