"""The diagnostics script's measurements on matrices with known answers and on a real short run."""

from __future__ import annotations

import torch
from conftest import load_script

diagnostics = load_script("diagnostics")


def test_alignment_is_exact_for_orthogonal_and_grows_with_steps_for_ill_conditioned_matrices():
    q, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64))
    exact = diagnostics.alignment([q[:, :16].float()])
    assert all(abs(c - 1) < 1e-5 for c in exact["cos_mean"].values()) and abs(exact["condition_median"] - 1) < 1e-4
    u, _ = torch.linalg.qr(torch.randn(32, 16))
    v, _ = torch.linalg.qr(torch.randn(16, 16))
    ill = u @ torch.diag(torch.logspace(0, -3, 16)) @ v.T  # condition number 1000
    a = diagnostics.alignment([ill])
    assert a["cos_mean"][1] < a["cos_mean"][3] < a["cos_mean"][5] < 1 and 900 < a["condition_median"] < 1100


def test_directions_are_captured_from_a_real_run():
    captured = diagnostics.capture_directions("muon2", steps=3, capture_at={2, 3}, seed=0)
    assert sorted(captured) == [2, 3]
    assert len(captured[2]) == len(captured[3]) == 4 * 6  # q, k, v, attention and MLP projections, MLP up: every hidden matrix once
    assert all(torch.isfinite(x).all() and x.ndim == 2 for x in captured[3])


def test_step_cost_counts_the_state():
    muon, muon2 = diagnostics.step_cost("muon", 7, 0), diagnostics.step_cost("muon2", 7, 0)
    assert muon["opt_step_ms"] > 0 and muon2["state_mb"] > muon["state_mb"] > 0


def test_short_timing_runs_time_at_least_one_step():
    for steps in (1, 5):  # at or below the untimed warmup: the median is over the steps that remain, never empty
        cost = diagnostics.step_cost("sgd", steps, 0)
        assert cost["opt_step_ms"] > 0
