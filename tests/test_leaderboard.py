"""Leaderboards and plots from the records only: grouping, order, speedups, evidence and tuning
budget in the table; what each figure draws; the README section between its markers."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import load_script
from fake_runs import fake_run, record
from matplotlib.colors import to_hex, to_rgb

from analysis import plots
from analysis.leaderboard import (
    README_END,
    README_START,
    YOUR_RUN,
    best_per_optimizer,
    board_after_run,
    curve,
    leaderboard,
    load_records,
    replace_readme_section,
    run_times,
    to_markdown,
    track_markdown,
)
from analysis.records import read_table
from nanogpt import runspec
from nanogpt.errors import UserError
from nanogpt.runlog import parse_log

submit, sweep, board_cli, verify = (load_script(n) for n in ("submit", "sweep", "leaderboard", "verify"))


@pytest.fixture
def board(tmp_path):
    """AdamW (60 steps) and Muon (40 steps: a shorter schedule, hence a shorter whole run) submitted
    with 3 seeds, a Muon sweep whose winner is the submitted Muon configuration, and three
    configurations never submitted (the sweep's Muon lr=0.01 and SGD, which never reach the target,
    and Muon lr=0.025 at 60 steps, whose runs would pass)."""
    common = ["--records-dir", str(tmp_path)]
    assert submit.main([*common, "--steps", "60", "--optimizer", "adamw", "--seeds", "0-2"], fake_run) == 0
    assert submit.main([*common, "--steps", "40", "--optimizer", "muon", "--seeds", "0-2"], fake_run) == 0
    assert sweep.main([*common, "--steps", "40", "--optimizer", "muon", "--grid", "lr=0.01,0.02", "--seeds", "0,1"], fake_run) == 0
    record(tmp_path, "muon", [0, 1], "lr=0.025")
    record(tmp_path, "sgd", [0, 1])
    return tmp_path


def test_submitted_leaderboard_order_speedups_evidence_and_budget(board):
    table = leaderboard(load_records(board), "tiny-cpu", include_unsubmitted=False)
    assert list(table["optimizer"]) == ["muon", "adamw"] and set(table["rule"]) == {"time"}  # the track's rule
    muon, adamw = table.iloc[0], table.iloc[1]
    assert muon.evidence and adamw.evidence and muon.record and not adamw.record
    assert muon.score == muon.train_mean < adamw.train_mean == adamw.score  # one number: the whole runs' train time
    assert muon.speedup_adamw == pytest.approx(adamw.train_mean / muon.train_mean) and muon.speedup_adamw > 1
    assert adamw.speedup_adamw == 1.0 and muon.speedup_muon == 1.0
    assert (muon.tuning_trials, muon.tuning_runs) == (2, 4) and adamw.tuning_trials == 0
    df = read_table(board)
    times = df[df["run_id"].isin(muon.run_ids)]["train_time_s"]
    assert muon.n == 3 and muon.train_mean == pytest.approx(times.mean())
    assert muon.train_hi - muon.train_mean == pytest.approx(4.3027 * times.std() / math.sqrt(3), rel=1e-3)  # t(0.975, 2)
    first = df[df["run_id"].isin(muon.run_ids)]["time_to_target_s"]
    assert muon.crossing_time == pytest.approx(first.median())  # secondary: AlgoPerf's median of the first crossing


def test_a_re_timed_setting_replaces_its_earlier_entry_and_keeps_its_budget(board, monkeypatch, capsys):
    """The same schedule re-run under a new identity (here the track's hash, as a newer harness
    would change the harness's) is a new configuration; its submission replaces the earlier one on
    the board and as the record, is judged against the other settings' record only, and keeps the
    tuning budget of the search that found its hyperparameters."""
    before = leaderboard(load_records(board), "tiny-cpu", include_unsubmitted=False)
    old_muon = before[before.optimizer == "muon"].iloc[0]
    monkeypatch.setattr(runspec, "track_sha256", lambda track: "0" * 64)
    assert submit.main(["--records-dir", str(board), "--steps", "40", "--optimizer", "muon", "--seeds", "0-2"], fake_run) == 0
    entries = load_records(board).submissions
    adamw, retimed = entries[0], entries[-1]
    assert retimed["group"] != old_muon.group and retimed["key"]["hparams"] == old_muon.hparams
    assert retimed["record_test"]["against"] == adamw["submission_id"]  # not its own earlier entry
    for include in (False, True):
        table = leaderboard(load_records(board), "tiny-cpu", include_unsubmitted=include)
        assert old_muon.group not in set(table.group) and retimed["group"] in set(table.group)
    table = leaderboard(load_records(board), "tiny-cpu", include_unsubmitted=False)
    muon = table[table.optimizer == "muon"].iloc[0]
    assert muon.record and muon.submission_id == retimed["submission_id"]
    assert (muon.tuning_trials, muon.tuning_runs) == (old_muon.tuning_trials, old_muon.tuning_runs) == (2, 4)
    assert board_cli.main(["--records-dir", str(board)]) == 0
    assert "1 earlier submissions were replaced by a later one of the same setting" in capsys.readouterr().out
    assert verify.main(["--records-dir", str(board)]) == 0


def test_all_groups_are_ranked_by_evidence_then_the_rules_score_then_loss(board):
    table = leaderboard(load_records(board), "tiny-cpu")
    assert list(table["optimizer"]) == ["muon", "adamw", "muon", "muon", "sgd"]
    assert list(table["evidence"]) == [True, True, None, None, None]
    assert list(table["tier"]) == [0, 0, 1, 2, 2]  # submitted and passing; passing, not submitted; the rest
    assert list(table["config"][[0, 2, 3]]) == ["lr=0.02, steps=40", "lr=0.025, steps=60", "lr=0.01, steps=40"]
    assert (table["n_reached"][3:] == 0).all() and table["speedup_adamw"][3:].isna().all()
    assert np.isinf(table["crossing_time"][3:]).all()  # every run missed: infinite, not absent
    assert table.iloc[3].loss_mean < table.iloc[4].loss_mean  # never reached: ranked by final loss


def test_the_steps_view_of_the_same_runs_ranks_by_schedule_length(board):
    table = leaderboard(load_records(board), "tiny-cpu", rule="steps")
    assert list(table["optimizer"]) == ["muon", "adamw", "muon", "muon", "sgd"] and set(table["rule"]) == {"steps"}
    assert list(table["score"][:3]) == [40, 60, 60] and table.iloc[0].record
    assert table.iloc[0].speedup_adamw == 1.5  # T of AdamW / T of Muon: steps do not depend on the machine
    assert table.iloc[0].margin == pytest.approx((1.6 - table.iloc[0].loss_mean) * math.sqrt(3))
    text = to_markdown(table, "tiny-cpu", 1.6)
    assert "rule: steps" in text and "| **T (steps)** |" in text and "first crossing: median step" in text
    assert "✓ record margin=" in text


def test_markdown_table(board):
    records = load_records(board)
    text = to_markdown(leaderboard(records, "tiny-cpu"), "tiny-cpu", 1.6)
    assert text.startswith("### tiny-cpu (target val loss 1.6; rule: time)")
    assert "| T (steps) | **train time (s)** |" in text and "first crossing: median time (s) †" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 5
    assert "✓ record p=" in rows[0] and "2 trials · 4 runs ·" in rows[0]
    assert rows[1].count("1.00×") == 1 and "not submitted (its runs would pass)" in rows[2]
    assert "| ∞ (0/2 reached) |" in rows[3] and "| ∞ (0/2 reached) |" in rows[4]
    assert "AlgoPerf's way" in text and "ttest_1samp(losses, target, alternative=\"less\")" in text
    assert text == track_markdown(board, "tiny-cpu", 1.6)  # what run.py prints after a run


def raw_mean(board, run_ids) -> float:
    """Mean whole-run train time of some runs, read from the CSV without the harness's reader."""
    raw = pd.read_csv(board / "records.csv")
    return float(raw[raw["run_id"].isin(run_ids)]["train_time_s"].mean())


def test_score_bars_draw_one_bar_per_entry_that_meets_the_rule(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    drawn = plots.score_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "t.png")
    assert drawn["n_bars"] == 3 == (table["tier"] < 2).sum()
    assert drawn["widths"] == pytest.approx([raw_mean(board, ids) for ids in table["run_ids"][:3]])  # from the CSV itself
    assert drawn["labels"][0].startswith("muon · lr=0.02, steps=40 (n=3)") and drawn["labels"][0].endswith("✓")
    assert drawn["colors"] == [plots.optimizer_color(o) for o in table["optimizer"][:3]]
    assert (tmp_path / "t.png").stat().st_size > 10_000
    steps = leaderboard(records, "tiny-cpu", rule="steps")
    assert plots.score_bars(steps, {}, "tiny-cpu", tmp_path / "s.png")["widths"] == [40, 60, 60]


def test_loss_curves_are_means_over_seeds_of_each_optimizers_best_group(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    best = best_per_optimizer(table)
    curves = {r.optimizer: curve(records, r.run_ids) for r in best.itertuples()}
    finals = [parse_log(board / log).training.evals[-1].loss
              for log in records.table[records.table["run_id"].isin(best.iloc[0].run_ids)]["log"]]
    assert curves["muon"]["mean"][-1] == pytest.approx(np.mean(finals))
    assert curves["muon"]["lo"][-1] == min(finals) and curves["muon"]["hi"][-1] == max(finals)
    assert list(curves["muon"]["steps"]) == [0, 25, 40]
    for x in ("time_s", "steps"):
        drawn = plots.loss_curves(curves, "tiny-cpu", 1.6, tmp_path / f"{x}.png", x)
        assert drawn["n_curves"] == 3 and drawn["n_bands"] == 3
        assert drawn["colors"] == [plots.optimizer_color(o) for o in curves]
        assert drawn["styles"] == [plots.optimizer_style(o)["ls"] for o in curves] and not drawn["legend_beside"]
        lo, hi = drawn["ylim"]
        assert lo < 1.6 < hi < 2.5  # zoomed near the target, not down from the initial loss of 5.5


def test_speedup_bars(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    drawn = plots.speedup_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "s.png")
    assert drawn["n_bars"] == 3
    adamw = raw_mean(board, table[table["optimizer"] == "adamw"]["run_ids"].iloc[0])  # the baseline: AdamW's whole runs
    assert drawn["widths"] == pytest.approx([adamw / raw_mean(board, ids) for ids in table["run_ids"][:3]])
    alone = table[table["optimizer"] == "adamw"]  # nothing beside the baseline: no chart, and why
    (tmp_path / "a.png").write_bytes(b"stale")
    drawn = plots.speedup_bars(alone, run_times(records, alone), "tiny-cpu", tmp_path / "a.png")
    assert "nothing to compare" in drawn["skipped"] and not (tmp_path / "a.png").exists()


def test_one_colour_per_optimizer_in_every_figure():
    shipped = plots.SHIPPED
    assert shipped == sorted(shipped) and {"adamw", "muon", "sgd"} <= set(shipped)
    assert plots.optimizer_color("adamw") == to_hex(plots.COLORS[shipped.index("adamw")])  # not the order of a figure
    assert len({plots.optimizer_color(o) for o in shipped}) == len(shipped)  # distinct
    rgb = {o: np.array(to_rgb(plots.optimizer_color(o))) for o in shipped}
    for a, b in itertools.combinations(shipped, 2):  # lines whose colours are hard to tell apart differ in style
        if np.linalg.norm(rgb[a] - rgb[b]) < 0.2:
            assert plots.optimizer_style(a)["ls"] != plots.optimizer_style(b)["ls"], (a, b)
    assert plots.optimizer_color("my_opt") == plots.optimizer_color("my_opt") not in {plots.optimizer_color(o) for o in shipped}
    labels = plots.colors(["sgd", "adamw@lr=0.1", "adamw@lr=0.2"])  # robustness labels: shades of the optimizer's colour
    assert labels["sgd"] == plots.optimizer_color("sgd") and labels["adamw@lr=0.1"] != labels["adamw@lr=0.2"]


def test_performance_profile_fractions(tmp_path):
    best = {"a": {"muon": 1.0, "adamw": 2.0}, "b": {"muon": 3.0, "adamw": 2.0, "sgd": math.inf}}
    drawn = plots.performance_profile(best, tmp_path / "p.png")
    assert drawn["ratios"] == {"adamw": [2.0, 1.0], "muon": [1.0, 1.5], "sgd": [math.inf, math.inf]}
    taus, prof = drawn["taus"], drawn["profiles"]
    at = {t: int(np.searchsorted(taus, t)) for t in (1.0, 1.6, 2.0)}
    assert (prof["muon"][at[1.0]], prof["muon"][at[1.6]], prof["adamw"][at[1.6]], prof["adamw"][at[2.0]]) == (0.5, 1.0, 0.5, 1.0)
    assert not prof["sgd"].any() and drawn["n_lines"] == 3
    assert not drawn["legend_beside"]  # three entries: inside the axes


def test_a_long_profile_legend_sits_beside_the_axes(tmp_path):
    names = plots.SHIPPED[:8]
    drawn = plots.performance_profile({t: {o: 1.0 + i for i, o in enumerate(names)} for t in ("a", "b")}, tmp_path / "p.png")
    assert drawn["n_lines"] == 8 and drawn["legend_beside"]


def test_performance_profile_of_one_track_is_left_out_with_the_reason(tmp_path):
    drawn = plots.performance_profile({"a": {"muon": 1.0, "adamw": 2.0}, "b": {"sgd": math.inf}}, tmp_path / "p.png")
    assert "1 track where two or more optimizers meet the rule" in drawn["skipped"] and not (tmp_path / "p.png").exists()
    # a track where one optimizer alone meets the rule ranks nobody: AdamW would be "best" there by default
    drawn = plots.performance_profile({"a": {"muon": 1.0, "adamw": 2.0}, "b": {"adamw": 5.0, "muon": math.inf}}, tmp_path / "p.png")
    assert "1 track where two or more" in drawn["skipped"]


def test_readme_section_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n\n{README_START}\nold table\n{README_END}\n\n## After\n")
    replace_readme_section(readme, "new table")
    assert readme.read_text() == f"# Title\n\nintro\n\n{README_START}\nnew table\n{README_END}\n\n## After\n"
    readme.write_text("# Title\n")
    with pytest.raises(UserError, match="has no '<!-- leaderboard:start -->' ... '<!-- leaderboard:end -->' markers"):
        replace_readme_section(readme, "x")


def test_cli_writes_plots_markdown_and_readme(board, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\n{README_END}\n")
    out = tmp_path / "plots"
    (out / "tiny-cpu").mkdir(parents=True)
    (out / "tiny-cpu" / "time_to_target.png").write_bytes(b"stale")  # a figure of earlier versions is removed
    assert board_cli.main(["--records-dir", str(board), "--out", str(out), "--readme", str(readme)]) == 0
    for name in ("train_time", "loss_vs_time", "loss_vs_steps", "speedup_adamw"):
        assert (out / "tiny-cpu" / f"{name}.png").stat().st_size > 10_000
    assert not (out / "tiny-cpu" / "time_to_target.png").exists()
    assert not (out / "performance_profile.png").exists()  # one track: nothing to profile
    text = readme.read_text()
    assert "\n| 1 | muon |" in text and "\n| 3 | " not in text  # submitted groups only
    assert "(plots/tiny-cpu/train_time.png)" in text
    assert "*performance profile: not drawn (1 track where two or more optimizers meet the rule" in text
    assert "3 configurations with runs were never submitted (--all shows them)" in text
    assert (out / "leaderboard.md").read_text().startswith("### tiny-cpu (target val loss 1.6; rule: time)")
    assert board_cli.main(["--records-dir", str(board), "--out", str(out), "--rule", "steps"]) == 0
    assert (out / "tiny-cpu" / "steps.png").exists() and not (out / "tiny-cpu" / "train_time.png").exists()
    assert "rule: steps" in (out / "leaderboard.md").read_text()
    readme.write_text("no markers\n")
    assert board_cli.main(["--records-dir", str(board), "--readme", str(readme)]) == 2
    assert "markers" in capsys.readouterr().err


def test_cli_on_empty_records_and_unknown_track(tmp_path, capsys):
    assert board_cli.main(["--records-dir", str(tmp_path)]) == 0
    assert "No runs recorded yet." in capsys.readouterr().out
    assert board_cli.main(["--records-dir", str(tmp_path), "--track", "nope"]) == 2
    assert "unknown track 'nope'" in capsys.readouterr().err


def test_plots_when_no_group_reached_the_target(tmp_path):
    record(tmp_path, "sgd", [0, 1])
    records = load_records(tmp_path)
    table = leaderboard(records, "tiny-cpu")
    assert "no entry meets the time rule" in plots.score_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "t.png")["skipped"]
    curves = {"sgd": curve(records, table.iloc[0].run_ids)}
    drawn = plots.loss_curves(curves, "tiny-cpu", 1.6, tmp_path / "c.png", "steps")
    assert "only tails far above it" in drawn["skipped"] and not (tmp_path / "c.png").exists()
    assert "nothing to compare" in plots.speedup_bars(table, {}, "tiny-cpu", tmp_path / "s.png")["skipped"]


def test_board_after_a_personal_run_shows_the_official_entries_and_that_run_marked(board, tmp_path):
    mine = tmp_path / "mine"
    record(mine, "sgd", [7])
    (row,) = read_table(mine).to_dict("records")
    before = (board / "records.csv").read_text()
    text = board_after_run(board, "tiny-cpu", 1.6, row, mine)
    entries = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(entries) == len(leaderboard(load_records(board), "tiny-cpu")) + 1
    (yours,) = [line for line in entries if YOUR_RUN in line]
    assert "| sgd |" in yours and f"recorded in {mine}" in text
    assert (board / "records.csv").read_text() == before  # the official table is only read
    # a run recorded into the official folder itself is already on the board: nothing is added
    official = to_markdown(leaderboard(load_records(board), "tiny-cpu"), "tiny-cpu", 1.6)
    assert board_after_run(board, "tiny-cpu", 1.6, row, board) == official


def test_times_normalised_to_the_reference_machine_are_labelled_and_scale_with_the_machine_figure(board):
    from analysis.leaderboard import REFERENCE_MACHINES

    table = leaderboard(load_records(board), "tiny-cpu")
    # the synthetic runs measured calib_ms 50: a machine (reference calib_ms) / 50 times faster than the reference
    ratio = REFERENCE_MACHINES["tiny-cpu"]["calib_ms"] / 50.0
    assert np.allclose(table["train_norm_mean"], table["train_mean"] * ratio)
    text = to_markdown(table, "tiny-cpu", 1.6)
    assert "normalised train time (s)" in text and REFERENCE_MACHINES["tiny-cpu"]["machine"] in text
    assert "**train time (s)**" in text  # the raw time stays the record's column
