"""Speedup over AdamW at matched final loss (analysis/speedup.py, the FPO comparison): synthetic
records whose final losses are set to values with a known answer, the bounds, the skip, the band,
what the figure draws and what the leaderboard script writes."""

import math

import numpy as np
import pytest
from conftest import load_script
from fake_runs import fake_run, record

from analysis import plots, speedup
from analysis.leaderboard import README_END, README_START, leaderboard, load_records
from nanogpt import runspec
from nanogpt.tracks import TRACKS

board_cli, submit = load_script("leaderboard"), load_script("submit")
TOKENS_PER_STEP = TRACKS["tiny-cpu"].tokens_per_step


def power_law(steps: float) -> float:
    """AdamW's final loss at a budget of `steps`: what the fit must recover."""
    return 1.4 + 3.0 * (steps * TOKENS_PER_STEP / 1e6) ** -0.35


def make(tmp_path, runs: dict[tuple[str, int], list[float]], *sets: str):
    """Records with one configuration per (optimizer, steps), one run per loss given, those final
    losses written over the synthetic ones; returns the records and the full leaderboard."""
    for (optimizer, steps), losses in runs.items():
        record(tmp_path, optimizer, range(len(losses)), *sets, steps=steps)
    records = load_records(tmp_path)
    t = records.table
    for (optimizer, steps), losses in runs.items():
        rows = t[(t["optimizer"] == optimizer) & (t["steps"] == steps)].sort_values("seed").index
        t.loc[rows, "final_val_loss"] = losses
    return records, leaderboard(records, "tiny-cpu")


def spread(mean: float, eps: float = 0.004) -> list[float]:
    return [mean - eps, mean, mean + eps]  # three seeds whose mean is exactly `mean`


def row(result, optimizer):
    rows = result["rows"]
    return rows[rows["optimizer"] == optimizer].iloc[0]


def test_power_law_fit_recovers_a_2x_speedup(tmp_path):
    """AdamW at four budgets on a known power law: an optimizer whose loss equals AdamW's at twice
    its tokens shows 2x, and one at 3x its tokens 3x; the fitted law is the generating one."""
    runs = {("adamw", t): spread(power_law(t)) for t in (20, 40, 80, 160)}
    runs[("muon", 30)] = spread(power_law(60))
    runs[("sgd", 20)] = spread(power_law(60))
    records, table = make(tmp_path, runs)
    result = speedup.speedups(records, "tiny-cpu", table)
    curve = result["curves"]["cpu-2core"]
    assert curve.method == "power-law fit" and list(curve.tokens) == [t * TOKENS_PER_STEP for t in (20, 40, 80, 160)]
    assert curve.params[2] == pytest.approx(0.35, rel=1e-3)
    muon, sgd = row(result, "muon"), row(result, "sgd")
    assert (muon.relation, sgd.relation) == ("=", "=")
    assert muon.speedup == pytest.approx(2.0, rel=1e-3) and sgd.speedup == pytest.approx(3.0, rel=1e-3)
    assert muon.adamw_tokens == pytest.approx(60 * TOKENS_PER_STEP, rel=1e-3)
    assert row(result, "adamw").speedup == pytest.approx(1.0, rel=1e-3)  # on its own curve
    assert muon.lo < muon.speedup < muon.hi < 2.2  # seeds spread 0.004 around the curve: a band, and a narrow one


def test_two_budgets_interpolate_in_log_tokens_from_adamws_family(tmp_path):
    """With two budgets of one AdamW configuration, the loss halfway between is reached halfway in
    log tokens (the geometric mean budget); an AdamW configuration with another lr at a third T is
    another family and is not used."""
    runs = {("adamw", 20): spread(2.0), ("adamw", 80): spread(1.8), ("muon", 20): spread(1.9)}
    records, table = make(tmp_path, runs)
    record(tmp_path, "adamw", [0, 1], "lr=0.01", steps=40)
    records = load_records(tmp_path)
    t = records.table
    for (optimizer, steps), losses in runs.items():
        t.loc[t[(t["optimizer"] == optimizer) & (t["steps"] == steps)].sort_values("seed").index, "final_val_loss"] = losses
    t.loc[t["steps"] == 40, "final_val_loss"] = 1.0  # would change everything if it joined the curve
    result = speedup.speedups(records, "tiny-cpu", leaderboard(records, "tiny-cpu"))
    curve = result["curves"]["cpu-2core"]
    assert curve.method == "interpolation in log tokens" and len(curve.tokens) == 2
    muon = row(result, "muon")
    assert muon.relation == "=" and muon.speedup == pytest.approx(2.0)  # sqrt(20 * 80) / 20
    assert muon.lo < muon.speedup < muon.hi  # the band contains the point
    assert not (muon.open_lo or muon.open_hi)


def test_losses_outside_adamws_range_are_bounds_not_extrapolations(tmp_path):
    runs = {("adamw", 20): spread(2.0), ("adamw", 80): spread(1.8), ("muon", 40): spread(1.7), ("sgd", 40): spread(2.1)}
    records, table = make(tmp_path, runs)
    result = speedup.speedups(records, "tiny-cpu", table)
    muon, sgd = row(result, "muon"), row(result, "sgd")
    assert (muon.relation, muon.speedup) == (">", 2.0)  # below AdamW's loss at its largest budget: AdamW needs > 80 steps
    assert (sgd.relation, sgd.speedup) == ("<", 0.5)  # above AdamW's loss at its smallest budget: AdamW needs < 20 steps
    assert math.isnan(muon.lo) and math.isnan(sgd.hi)  # a bound has no band
    text = speedup.to_markdown(result, "tiny-cpu")
    assert "| > 2.00× |" in text and "| < 0.50× |" in text
    drawn = plots.speedup_matched_loss(result, "tiny-cpu", tmp_path / "s.png")
    assert drawn["markers"][:1] == [">"] and drawn["markers"][-1] == "<"


def test_band_comes_from_both_sides_seeds_and_contains_the_point(tmp_path):
    """Noisy seeds on both sides: the band contains the point and widens when AdamW's runs are noisier
    (three budgets: interpolation; the fitted curve's band is checked with the fit)."""
    rng = np.random.default_rng(1)
    base = {("adamw", t): list(power_law(t) + 0.01 * rng.standard_normal(4)) for t in (20, 40, 80)}
    base[("muon", 30)] = list(power_law(60) + 0.01 * rng.standard_normal(4))
    records, table = make(tmp_path / "a", base)
    narrow = row(speedup.speedups(records, "tiny-cpu", table), "muon")
    assert narrow.relation == "=" and narrow.lo < narrow.speedup < narrow.hi
    assert narrow.speedup == pytest.approx(2.0, rel=0.15)
    noisy = {k: (list(power_law(k[1]) + 4 * (np.array(v) - power_law(k[1]))) if k[0] == "adamw" else v) for k, v in base.items()}
    records, table = make(tmp_path / "b", noisy)
    wide = row(speedup.speedups(records, "tiny-cpu", table), "muon")
    assert wide.hi - wide.lo > narrow.hi - narrow.lo


def test_figure_draws_one_point_per_optimizer_in_its_colour_with_its_band(tmp_path):
    runs = {("adamw", 20): spread(2.0, 0.02), ("adamw", 80): spread(1.8, 0.02), ("muon", 20): spread(1.9, 0.02)}
    records, table = make(tmp_path, runs)
    result = speedup.speedups(records, "tiny-cpu", table)
    drawn = plots.speedup_matched_loss(result, "tiny-cpu", tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert drawn["colors"] == [plots.optimizer_color("muon"), plots.optimizer_color("adamw")]
    assert drawn["points"] == pytest.approx([2.0, 1.0]) and drawn["labels"][0].startswith("muon")
    lo, hi = drawn["bands"][0]
    muon = row(result, "muon")
    assert (lo, hi) == pytest.approx((muon.lo, muon.hi)) and lo < 2.0 < hi
    assert drawn["n_arrows"] == 2


def test_non_increasing_pools_adamw_budgets_that_got_worse_with_more_tokens():
    assert list(speedup.non_increasing([1.8, 1.9, 1.5], [1, 1, 1])) == pytest.approx([1.85, 1.85, 1.5])
    assert list(speedup.non_increasing([1.8, 1.9, 1.5], [3, 1, 1])) == pytest.approx([1.825, 1.825, 1.5])


def test_an_adamw_budget_re_timed_under_a_newer_harness_keeps_its_place_on_the_curve(tmp_path, monkeypatch):
    """AdamW at three budgets under one harness, the middle one submitted, then re-timed under a
    newer harness: the re-timing replaces that entry on the board, but the earlier runs still
    measure their configuration at that budget, so AdamW's curve keeps all three."""
    record(tmp_path, "adamw", [0, 1, 2], steps=40)
    record(tmp_path, "adamw", [0, 1, 2], steps=80)
    common = ["--records-dir", str(tmp_path), "--optimizer", "adamw", "--steps", "60", "--seeds", "0-2"]
    assert submit.main(common, fake_run) == 0
    old_group = load_records(tmp_path).submissions[-1]["group"]
    monkeypatch.setattr(runspec.RunSpec, "harness_sha256", property(lambda self: "1" * 64))
    assert submit.main(common, fake_run) == 0
    records = load_records(tmp_path)
    table = leaderboard(records, "tiny-cpu")
    assert old_group not in set(table.group) and records.submissions[-1]["group"] in set(table.group)
    curve = speedup.speedups(records, "tiny-cpu", table)["curves"]["cpu-2core"]
    assert list(curve.tokens) == [t * TOKENS_PER_STEP for t in (40, 60, 80)]


def test_a_power_law_that_does_not_fit_falls_back_to_interpolation_and_says_so(tmp_path):
    """AdamW's losses falling faster at larger budgets (as on tiny-cpu): no decreasing convex power
    law fits them, so the curve interpolates and the caption says why."""
    means = {90: 1.5651, 96: 1.5578, 101: 1.5455, 104: 1.5402, 120: 1.5145}
    runs = {("adamw", t): spread(m, 0.01) for t, m in means.items()}
    runs[("muon", 40)] = spread(1.55)
    records, table = make(tmp_path, runs)
    result = speedup.speedups(records, "tiny-cpu", table)
    assert result["curves"]["cpu-2core"].method == "interpolation in log tokens"
    assert "interpolation in log tokens (the power-law fit did not converge)" in speedup.to_markdown(result, "tiny-cpu")


def test_one_adamw_budget_skips_the_table_and_the_figure_with_the_reason(tmp_path):
    record(tmp_path, "adamw", [0, 1], steps=60)
    record(tmp_path, "muon", [0, 1], steps=40)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\n{README_END}\n")
    out = tmp_path / "plots"
    (out / "tiny-cpu").mkdir(parents=True)
    (out / "tiny-cpu" / "speedup_matched_loss.png").write_bytes(b"stale")
    assert board_cli.main(["--records-dir", str(tmp_path), "--all", "--out", str(out), "--readme", str(readme)]) == 0
    assert not (out / "tiny-cpu" / "speedup_matched_loss.png").exists()
    text = readme.read_text()
    assert "#### tiny-cpu: speedup over adamw at matched final loss" in text
    assert "*Not computed on cpu-2core: adamw has runs at 1 budget (T = 60)" in text
    assert "*tiny-cpu speedup_matched_loss: not drawn (adamw has runs at 1 budget" in text


def test_cli_writes_the_speedup_table_and_figure(tmp_path):
    record(tmp_path, "adamw", [0, 1, 2], steps=30)
    record(tmp_path, "adamw", [0, 1, 2], steps=90)
    record(tmp_path, "muon", [0, 1, 2], steps=40)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\n{README_END}\n")
    out = tmp_path / "plots"
    assert board_cli.main(["--records-dir", str(tmp_path), "--all", "--out", str(out), "--readme", str(readme)]) == 0
    assert (out / "tiny-cpu" / "speedup_matched_loss.png").stat().st_size > 10_000
    text = readme.read_text()
    assert "(plots/tiny-cpu/speedup_matched_loss.png)" in text
    assert "| muon | " in text.split("#### tiny-cpu: speedup over adamw at matched final loss")[1]


def test_long_row_labels_leave_the_right_panels_title_and_axis_label_inside_the_figure(tmp_path):
    """A long configuration label narrows the right panel; its title and x-label, wider than the
    narrowed axes, must still end inside the saved figure (centred, they ran past its right edge)."""
    runs = {("adamw", 20): spread(2.0, 0.02), ("adamw", 80): spread(1.8, 0.02), ("muon", 20): spread(1.9, 0.02)}
    records, table = make(tmp_path, runs)
    result = speedup.speedups(records, "tiny-cpu", table)
    result["rows"]["config"] = "lr=0.04, beta_a=0.975, alpha=20, ns_steps=5, weight_decay=0.1, momentum=0.95"
    drawn = plots.speedup_matched_loss(result, "tiny-moe-cpu", tmp_path / "s.png")
    assert drawn["labels"][0].startswith("muon · lr=0.04, beta_a=0.975")
    assert drawn["cut_off"] == []
