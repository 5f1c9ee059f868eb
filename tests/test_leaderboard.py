"""Leaderboards and plots from the records only: grouping, order, speedups, evidence and tuning
budget in the table; what each figure draws; the README section between its markers."""

import math

import numpy as np
import pytest
from conftest import load_script
from fake_runs import fake_run, record

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
from nanogpt.errors import UserError
from nanogpt.runlog import parse_log

submit, sweep, board_cli = load_script("submit"), load_script("sweep"), load_script("leaderboard")


@pytest.fixture
def board(tmp_path):
    """AdamW and Muon submitted (3 seeds), a Muon sweep whose winner is the submitted Muon
    configuration, and three configurations never submitted (the sweep's Muon lr=0.01 and SGD,
    which never reach the target, and Muon lr=0.025, which does)."""
    common = ["--records-dir", str(tmp_path), "--steps", "60"]
    assert submit.main([*common, "--optimizer", "adamw", "--seeds", "0-2"], fake_run) == 0
    assert submit.main([*common, "--optimizer", "muon", "--seeds", "0-2"], fake_run) == 0
    assert sweep.main([*common, "--optimizer", "muon", "--grid", "lr=0.01,0.02", "--seeds", "0,1"], fake_run) == 0
    record(tmp_path, "muon", [0, 1], "lr=0.025")
    record(tmp_path, "sgd", [0, 1])
    return tmp_path


def test_submitted_leaderboard_order_speedups_evidence_and_budget(board):
    table = leaderboard(load_records(board), "tiny-cpu", include_unsubmitted=False)
    assert list(table["optimizer"]) == ["muon", "adamw"]
    muon, adamw = table.iloc[0], table.iloc[1]
    assert muon.evidence and adamw.evidence and muon.record and not adamw.record
    assert muon.time_mean < adamw.time_mean
    assert muon.speedup_adamw == pytest.approx(adamw.time_mean / muon.time_mean) and muon.speedup_adamw > 1
    assert adamw.speedup_adamw == 1.0 and muon.speedup_muon == 1.0
    assert (muon.tuning_trials, muon.tuning_runs) == (2, 4) and adamw.tuning_trials == 0
    df = read_table(board)
    times = df[df["run_id"].isin(muon.run_ids)]["time_to_target_s"]
    assert muon.n == 3 and muon.time_mean == pytest.approx(times.mean())
    assert muon.time_hi - muon.time_mean == pytest.approx(4.3027 * times.std() / math.sqrt(3), rel=1e-3)  # t(0.975, 2)


def test_all_groups_are_ranked_by_evidence_then_time_then_loss(board):
    table = leaderboard(load_records(board), "tiny-cpu")
    assert list(table["optimizer"]) == ["muon", "adamw", "muon", "muon", "sgd"]
    assert list(table["evidence"]) == [True, True, None, None, None]
    assert list(table["config"][[0, 2, 3]]) == ["lr=0.02", "lr=0.025", "lr=0.01"]
    assert (table["n_reached"][3:] == 0).all() and table["speedup_adamw"][3:].isna().all()
    assert table.iloc[3].loss_mean < table.iloc[4].loss_mean  # never reached: ranked by final loss


def test_markdown_table(board):
    records = load_records(board)
    text = to_markdown(leaderboard(records, "tiny-cpu"), "tiny-cpu", 1.6)
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert len(rows) == 5
    assert "✓ record p=" in rows[0] and "2 trials · 4 runs ·" in rows[0]
    assert rows[1].count("1.00×") == 1 and "not submitted" in rows[2]
    assert "| 2 (0 reached) |" in rows[3] and "| 2 (0 reached) |" in rows[4]
    assert text == track_markdown(board, "tiny-cpu", 1.6)  # what run.py prints after a run


def test_time_bars_draw_one_bar_per_group_that_reached_the_target(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    drawn = plots.time_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "t.png")
    assert drawn["n_bars"] == 3 == (table["n_reached"] > 0).sum()
    assert drawn["widths"] == pytest.approx(list(table["time_mean"][:3]))
    assert drawn["labels"][0].startswith("muon · lr=0.02 (n=3)") and drawn["labels"][0].endswith("✓")
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_loss_curves_are_means_over_seeds_of_each_optimizers_best_group(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    best = best_per_optimizer(table)
    curves = {r.optimizer: curve(records, r.run_ids) for r in best.itertuples()}
    finals = [parse_log(board / log).training.evals[-1].loss
              for log in records.table[records.table["run_id"].isin(best.iloc[0].run_ids)]["log"]]
    assert curves["muon"]["mean"][-1] == pytest.approx(np.mean(finals))
    assert curves["muon"]["lo"][-1] == min(finals) and curves["muon"]["hi"][-1] == max(finals)
    assert list(curves["muon"]["steps"]) == [0, 25, 50, 60]
    for x in ("time_s", "steps"):
        drawn = plots.loss_curves(curves, "tiny-cpu", 1.6, tmp_path / f"{x}.png", x)
        assert drawn["n_curves"] == 3 and drawn["n_bands"] == 3
        lo, hi = drawn["ylim"]
        assert lo < 1.6 < hi < 2.5  # zoomed near the target, not down from the initial loss of 5.5


def test_speedup_bars(board, tmp_path):
    records = load_records(board)
    table = leaderboard(records, "tiny-cpu")
    drawn = plots.speedup_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "s.png")
    assert drawn["n_bars"] == 3
    assert drawn["widths"] == pytest.approx(list(table["speedup_adamw"][:3]))


def test_performance_profile_fractions(tmp_path):
    best = {"a": {"muon": 1.0, "adamw": 2.0}, "b": {"muon": 3.0, "adamw": 2.0, "sgd": math.inf}}
    drawn = plots.performance_profile(best, tmp_path / "p.png")
    assert drawn["ratios"] == {"adamw": [2.0, 1.0], "muon": [1.0, 1.5], "sgd": [math.inf, math.inf]}
    taus, prof = drawn["taus"], drawn["profiles"]
    at = {t: int(np.searchsorted(taus, t)) for t in (1.0, 1.6, 2.0)}
    assert (prof["muon"][at[1.0]], prof["muon"][at[1.6]], prof["adamw"][at[1.6]], prof["adamw"][at[2.0]]) == (0.5, 1.0, 0.5, 1.0)
    assert not prof["sgd"].any() and drawn["n_lines"] == 3


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
    assert board_cli.main(["--records-dir", str(board), "--out", str(out), "--readme", str(readme)]) == 0
    for name in ("time_to_target", "loss_vs_time", "loss_vs_steps", "speedup_adamw"):
        assert (out / "tiny-cpu" / f"{name}.png").stat().st_size > 10_000
    assert (out / "performance_profile.png").exists()
    text = readme.read_text()
    assert "\n| 1 | muon |" in text and "\n| 3 | " not in text  # submitted groups only
    assert "(plots/tiny-cpu/time_to_target.png)" in text and "(plots/performance_profile.png)" in text
    assert "3 configurations with runs were never submitted (--all shows them)" in text
    assert (out / "leaderboard.md").read_text().startswith("### tiny-cpu (target val loss 1.6)")
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
    assert plots.time_bars(table, run_times(records, table), "tiny-cpu", tmp_path / "t.png")["n_bars"] == 0
    curves = {"sgd": curve(records, table.iloc[0].run_ids)}
    lo, hi = plots.loss_curves(curves, "tiny-cpu", 1.6, tmp_path / "c.png", "steps")["ylim"]
    assert lo < 1.6 and hi > curves["sgd"]["hi"][-1]  # the target and the end of every curve stay in view


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
    reached = table[table["n_reached"] == table["n"]]
    # the synthetic runs measured calib_ms 50: a machine 203.7 / 50 times faster than the reference
    ratio = REFERENCE_MACHINES["tiny-cpu"]["calib_ms"] / 50.0
    assert np.allclose(reached["time_norm_mean"], reached["time_mean"] * ratio)
    text = to_markdown(table, "tiny-cpu", 1.6)
    assert "normalised time (s)" in text and REFERENCE_MACHINES["tiny-cpu"]["machine"] in text
    assert "time to target (s)" in text  # the raw time stays the record's column
