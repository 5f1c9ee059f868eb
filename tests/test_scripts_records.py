"""The records CLIs end to end: submit decides and records, verify catches tampering (including a
real run's log edited by hand), rebuild reproduces the table, sweeps and step searches record
every run and resume after an interruption. Synthetic runs go through run.py's argument parsing,
configuration, log writer and row builder (tests/fake_runs.py); one real run checks the rest."""

import json
import math
import re
import shutil
import statistics

import numpy as np
import pytest
import scipy.stats
from conftest import load_script
from fake_runs import fake_run, record

import run
from analysis import stats
from analysis.leaderboard import leaderboard, load_records
from analysis.records import read_entries, read_raw_rows, read_table, submissions_path, sweeps_path
from analysis.submissions import Rule, decide
from analysis.sweeps import next_probe, shortfall
from nanogpt import tracks
from nanogpt.recording import table_path
from nanogpt.runlog import parse_log, sha256_text

submit, verify, rebuild, sweep, find_steps, bench = (load_script(n) for n in ("submit", "verify", "rebuild_records", "sweep",
                                                                              "find_steps", "bench"))


class Counting:
    """A runner that records synthetic runs and counts launches (optionally interrupted at call k)."""

    def __init__(self, interrupt_at: int | None = None, **kwargs):
        self.calls, self.interrupt_at, self.kwargs = 0, interrupt_at, kwargs

    def __call__(self, argv: list[str]) -> int:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return fake_run(argv, **self.kwargs)


def submissions(d):
    return read_entries(submissions_path(d), ("submission",))


def args(d, *extra):
    return ["--records-dir", str(d), "--steps", "60", *extra]


# ---- submissions ------------------------------------------------------------------------------


def test_submit_runs_missing_seeds_reuses_recorded_ones_and_records_the_decision(tmp_path, capsys):
    record(tmp_path, "muon", [0, 1])
    runner = Counting()
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-3"), runner) == 0
    assert runner.calls == 2  # seeds 2 and 3
    (entry,) = submissions(tmp_path)
    assert [r["seed"] for r in entry["runs"]] == [0, 1, 2, 3] and entry["n"] == 4
    assert entry["evidence"] and entry["new_record"] and entry["target_test"]["p"] < 0.01
    loss = entry["final_val_loss"]
    assert loss["ci_t"][0] < loss["mean"] < loss["ci_t"][1] and loss["ci_bootstrap"][0] < loss["mean"] < loss["ci_bootstrap"][1]
    assert entry["rule"] == "time" and entry["rule_params"] == {"alpha": 0.01} and entry["steps"] == 60
    assert entry["train_time_s"]["n"] == 4 and entry["score"] == entry["train_time_s"]["mean"]
    assert entry["first_crossing"]["n_reached"] == 4
    out = capsys.readouterr().out
    assert "evidence ✓, NEW RECORD" in out and "recorded in" in out


def test_submit_refuses_repeated_seeds(tmp_path, capsys):
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0,1,0"), Counting()) == 2
    assert "seed 0 appears twice" in capsys.readouterr().err
    record(tmp_path, "muon", [0, 0, 1])
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0,1"), Counting()) == 2
    assert "seed 0 was run 2 times in this configuration" in capsys.readouterr().err
    ids = list(read_table(tmp_path)["run_id"])
    assert submit.main(["--records-dir", str(tmp_path), "--runs", ids[0], ids[1]]) == 2
    assert "repeat seed 0" in capsys.readouterr().err
    assert not submissions_path(tmp_path).exists()


def test_submit_refuses_mixed_configurations(tmp_path, capsys):
    record(tmp_path, "muon", [0])
    record(tmp_path, "muon", [1], "lr=0.03")
    record(tmp_path, "adamw", [2])
    ids = list(read_table(tmp_path)["run_id"])
    assert submit.main(["--records-dir", str(tmp_path), "--runs", ids[0], ids[1]]) == 2
    assert "differ in hparams:" in capsys.readouterr().err
    assert submit.main(["--records-dir", str(tmp_path), "--runs", ids[0], ids[2]]) == 2
    assert "differ in optimizer, code_sha256, hparams" in capsys.readouterr().err


def test_submit_refuses_runs_from_different_devices(tmp_path, capsys):
    Counting()(args(tmp_path, "--optimizer", "muon", "--seed", "0"))
    Counting(device="other-cpu")(args(tmp_path, "--optimizer", "muon", "--seed", "1"))
    ids = list(read_table(tmp_path)["run_id"])
    assert submit.main(["--records-dir", str(tmp_path), "--runs", *ids]) == 2
    assert "ran on different devices (fake-cpu, other-cpu)" in capsys.readouterr().err
    assert not submissions_path(tmp_path).exists()


def test_contended_runs_are_evidence_only_when_accepted_and_verify_agrees(tmp_path, capsys):
    runner = Counting(contended_seeds=(1,))
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-2"), runner) == 1
    (refused,) = submissions(tmp_path)
    assert not refused["evidence"] and any("1 of 3 runs were timed on a busy machine" in r for r in refused["reasons"])
    assert "accepted_contended" not in refused
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-2", "--accept-contended"), runner) == 0
    accepted = submissions(tmp_path)[-1]
    assert accepted["evidence"] and accepted["accepted_contended"] == 1
    assert "1 contended runs accepted" in capsys.readouterr().out
    (row,) = leaderboard(load_records(tmp_path), "tiny-cpu").itertuples()
    assert row.n_contended == 1 and row.accepted_contended == 1
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


def test_every_run_missing_the_target_is_no_evidence(tmp_path, capsys):
    assert submit.main(args(tmp_path, "--optimizer", "adamw", "--set", "lr=0.03", "--seeds", "0-2"), Counting()) == 1
    (entry,) = submissions(tmp_path)
    assert not entry["evidence"] and not entry["new_record"] and entry["first_crossing"]["n_reached"] == 0
    assert entry["first_crossing"]["median_time_s"] is None  # infinite (every run missed), written as null
    assert entry["runs_needed"]["target"] is None  # the mean is above the target: more runs cannot help
    assert any("is not below the target" in r for r in entry["reasons"])
    assert "evidence ✗" in capsys.readouterr().out


def test_a_diverged_run_in_the_set_is_no_evidence(tmp_path):
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-3"), Counting(diverge_seeds=(2,))) == 1
    (entry,) = submissions(tmp_path)
    assert entry["n_diverged"] == 1 and entry["final_val_loss"]["n"] == 3
    assert entry["target_test"]["passed"] and not entry["evidence"]  # the others pass, but a seed blew up
    assert entry["reasons"] == ["1 of 4 runs diverged"]


def test_one_run_is_no_evidence(tmp_path):
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "5"), Counting()) == 1
    (entry,) = submissions(tmp_path)
    assert not entry["evidence"] and entry["runs_needed"] == {"target": None, "record": None}
    assert "a single run cannot show significance" in entry["reasons"][0]


def test_short_evidence_estimates_the_runs_needed_and_more_seeds_settle_it(tmp_path, capsys):
    runner = Counting(noise=0.03)  # noisy seeds: two runs are not enough
    cmd = args(tmp_path, "--optimizer", "muon", "--steps", "40")
    assert submit.main([*cmd, "--seeds", "0,1"], runner) == 1
    (short,) = submissions(tmp_path)
    assert short["final_val_loss"]["mean"] < short["target"] and short["target_test"]["p"] > 0.01
    needed = short["runs_needed"]["target"]
    assert needed == stats.runs_for_target([r["final_val_loss"] for r in short["runs"]], short["target"]) > 2  # (its power: test_stats)
    assert f"about {needed} runs in total (+{needed - 2})" in capsys.readouterr().out
    assert submit.main([*cmd, "--seeds", f"0-{needed + 1}"], runner) == 0  # the same seeds plus new ones
    assert runner.calls == needed + 2 and submissions(tmp_path)[1]["evidence"]


def test_welch_on_whole_run_train_times_against_the_current_record(tmp_path):
    assert submit.main(args(tmp_path, "--optimizer", "adamw", "--seeds", "0-4"), Counting()) == 0
    adamw = submissions(tmp_path)[0]
    assert adamw["new_record"] and adamw["record_test"]["against"] is None
    # Muon reaches the target earlier, but a 60-step Muon run takes longer than a 60-step AdamW run:
    # the time rule times whole runs of the schedule, so first crossing does not make a record
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-4"), Counting()) == 0
    slow = submissions(tmp_path)[1]
    assert slow["first_crossing"]["median_time_s"] < adamw["first_crossing"]["median_time_s"]
    assert slow["evidence"] and not slow["new_record"] and not slow["record_test"]["passed"]
    assert slow["record_test"]["against"] == adamw["submission_id"]
    assert slow["record_test"]["reference_train_time_s"] == pytest.approx(adamw["train_time_s"]["mean"])
    assert any("not faster than the record" in r for r in slow["reasons"])
    # a shorter schedule that still meets the target is faster on the whole run: a record
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--steps", "40", "--seeds", "0-4"), Counting()) == 0
    short = submissions(tmp_path)[2]
    assert short["record_test"]["against"] == adamw["submission_id"] and short["record_test"]["passed"] and short["new_record"]
    assert short["train_time_s"]["mean"] < adamw["train_time_s"]["mean"]
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


@pytest.mark.usefixtures("track3_rule")
def test_steps_rule_submission_pairwise_record_and_verify(tmp_path, capsys):
    steps = ["--rule", "steps", "--seeds", "0-2"]
    assert submit.main([*args(tmp_path, "--optimizer", "adamw"), *steps], Counting()) == 0
    adamw = submissions(tmp_path)[0]
    assert adamw["rule"] == "steps" and adamw["score"] == 60 and adamw["new_record"]
    assert adamw["rule_params"] == {"sigma": 0.0013, "threshold": 0.004, "loss_per_step": 0.0045 / 100}
    margin = (1.6 - adamw["final_val_loss"]["mean"]) * 3 ** 0.5
    assert adamw["target_test"]["margin"] == pytest.approx(margin) and adamw["target_test"]["passed"]
    # Muon at 40 steps: fewer steps and a lower loss than the record, by the pairwise rule
    assert submit.main([*args(tmp_path, "--optimizer", "muon", "--steps", "40"), *steps], Counting()) == 0
    muon = submissions(tmp_path)[1]
    rec = muon["record_test"]
    expected = ((adamw["final_val_loss"]["mean"] - muon["final_val_loss"]["mean"]) + 20 * 0.0045 / 100) / (2 / 3) ** 0.5
    assert rec["against"] == adamw["submission_id"] and rec["reference_steps"] == 60
    assert rec["margin"] == pytest.approx(expected) and rec["passed"] and muon["new_record"]
    # Muon with another lr at the same 40 steps ends at a higher loss: evidence, but not better than the record
    assert submit.main([*args(tmp_path, "--optimizer", "muon", "--steps", "40", "--set", "lr=0.022"), *steps], Counting()) == 0
    worse = submissions(tmp_path)[2]
    assert worse["evidence"] and worse["record_test"]["against"] == muon["submission_id"] and not worse["new_record"]
    assert worse["record_test"]["margin"] < 0.004 and any("not better than the record" in r for r in worse["reasons"])
    assert "rule steps" in capsys.readouterr().out
    assert verify.main(["--records-dir", str(tmp_path)]) == 0
    # a forged margin is caught
    lines = submissions_path(tmp_path).read_text().splitlines()
    entry = json.loads(lines[1])
    entry["record_test"]["margin"] += 0.01
    lines[1] = json.dumps(entry, sort_keys=True)
    submissions_path(tmp_path).write_text("\n".join(lines) + "\n")
    assert verify.main(["--records-dir", str(tmp_path)]) == 1
    assert "record_test.margin" in capsys.readouterr().out


def test_one_run_may_pass_the_steps_rule_its_sigma_is_fixed(tmp_path):
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "5", "--rule", "steps"), Counting()) == 0
    (entry,) = submissions(tmp_path)
    assert entry["evidence"] and entry["n"] == 1 and entry["target_test"]["margin"] >= 0.004


def test_legacy_entries_are_verified_as_they_were_decided(tmp_path, capsys):
    """An entry without a `rule` was decided by the first-crossing rule; verify recomputes it so."""
    from analysis.submissions import decide_legacy, legacy_current_record, run_facts

    record(tmp_path, "muon", [0, 1, 2])
    rows = read_table(tmp_path).to_dict("records")
    facts = sorted((run_facts(r) for r in rows), key=lambda f: f["seed"])
    from analysis.submissions import Rule, make_entry

    entry = make_entry(rows, None, Rule("time"))
    for k in ("rule", "rule_params", "steps", "train_time_s", "score", "first_crossing"):
        del entry[k]
    assert legacy_current_record([], "tiny-cpu", "cpu-2core") is None
    entry |= decide_legacy(facts, entry["target"], None)
    submissions_path(tmp_path).write_text(json.dumps(entry, sort_keys=True) + "\n")
    assert verify.main(["--records-dir", str(tmp_path)]) == 0
    entry["time_to_target_s"]["mean"] += 1.0  # the legacy numbers are checked too
    submissions_path(tmp_path).write_text(json.dumps(entry, sort_keys=True) + "\n")
    assert verify.main(["--records-dir", str(tmp_path)]) == 1
    assert "time_to_target_s.mean" in capsys.readouterr().out


# ---- verify -----------------------------------------------------------------------------------


@pytest.fixture
def recorded(tmp_path):
    """Two submitted groups, a diverged run and a sweep, all synthetic."""
    assert submit.main(args(tmp_path, "--optimizer", "adamw", "--seeds", "0-2"), Counting()) == 0
    assert submit.main(args(tmp_path, "--optimizer", "muon", "--seeds", "0-2"), Counting()) == 0
    assert sweep.main(args(tmp_path, "--optimizer", "muon", "--grid", "lr=0.01,0.02", "--seeds", "0,1"), Counting()) == 0
    record(tmp_path, "muon", [9], "lr=3.0")
    return tmp_path


def test_verify_accepts_honest_records(recorded, capsys):
    assert verify.main(["--records-dir", str(recorded)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "ok   submission" in out and "ok   sweep" in out


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_verify_reports_an_edited_table_row(recorded, capsys):
    rec = read_raw_rows(recorded)[0][1]
    _edit(table_path(recorded), f",{rec['final_val_loss']},", f",{float(rec['final_val_loss']) - 0.01:.4f},")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {rec['run_id']}" in out and "table: final_val_loss" in out
    assert "run " + rec["run_id"] + " failed verification" in out  # and the submission that uses it


def test_verify_reports_an_edited_log_line(recorded, capsys):
    rec = read_raw_rows(recorded)[0][1]
    log = recorded / rec["log"]
    final = next(line for line in log.read_text().splitlines() if line.startswith("step:60/60 val_loss:"))
    _edit(log, final, final.replace("val_loss:1.", "val_loss:0."))
    assert verify.main(["--records-dir", str(recorded), rec["run_id"]]) == 1
    out = capsys.readouterr().out
    assert "result section: final_val_loss" in out and "table: final_val_loss" in out


@pytest.mark.parametrize("new, message", [
    ("def build(params, hp, mode1):", "optimizer adamw.py does not match its recorded sha256"),  # same length
    ("def build(params, hp, model):  # faster", "embedded optimizer adamw.py is not"),  # longer
])
def test_verify_reports_edited_embedded_code(recorded, capsys, new, message):
    rec = read_raw_rows(recorded)[0][1]
    log = recorded / rec["log"]
    head, sep, optimizer_part = log.read_text().partition("optimizer adamw.py")  # the edit goes into the optimizer's section
    assert sep and "def build(params, hp, model):" in optimizer_part
    log.write_text(head + sep + optimizer_part.replace("def build(params, hp, model):", new, 1))
    assert verify.main(["--records-dir", str(recorded)]) == 1
    assert message in capsys.readouterr().out


def test_verify_reports_an_edited_submission(recorded, capsys):
    path = submissions_path(recorded)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["final_val_loss"]["mean"] -= 0.05
    lines[1] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL submission {entry['submission_id']}" in out and "final_val_loss.mean: recorded" in out


def test_verify_reports_a_forged_sweep_budget(recorded, capsys):
    path = sweeps_path(recorded)
    entry = json.loads(path.read_text())
    entry["budget"]["device_s"] /= 2
    path.write_text(json.dumps(entry) + "\n")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    assert "budget device_s" in capsys.readouterr().out


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real two-step run of run.py (the true trainer and writer)."""
    d = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as mp:  # a small validation set and one warmup step (what verify reads is the same)
        mp.setitem(tracks.TRACKS, "tiny-cpu", tracks.TRACKS["tiny-cpu"].with_overrides(val_tokens=2048, warmup_steps=1))
        assert run.main(["--no-compile", "--steps", "2", "--records-dir", str(d), "--quiet", "--seed", "0", "--optimizer", "adamw"]) == 0
    return d


def test_verify_catches_a_real_log_edited_by_hand(real_run, tmp_path, capsys):
    d = tmp_path / "records"
    shutil.copytree(real_run, d)
    assert verify.main(["--records-dir", str(d)]) == 0
    rec = read_raw_rows(d)[0][1]
    log = d / rec["log"]
    last = [line for line in log.read_text().splitlines() if "val_loss:" in line][-1]
    loss = last.split("val_loss:")[1].split()[0]
    _edit(log, last, last.replace(f"val_loss:{loss}", f"val_loss:{float(loss) - 0.5:.4f}"))
    assert verify.main(["--records-dir", str(d)]) == 1
    assert "final_val_loss" in capsys.readouterr().out


def test_rebuild_of_a_real_run_reproduces_its_row(real_run, tmp_path):
    d = tmp_path / "records"
    shutil.copytree(real_run, d)
    before = read_raw_rows(d)
    table_path(d).unlink()
    assert rebuild.main(["--records-dir", str(d)]) == 0
    assert read_raw_rows(d) == before


# ---- rebuild ----------------------------------------------------------------------------------


def test_rebuild_reproduces_the_table_from_the_logs(recorded, capsys):
    before = {rec["run_id"]: rec for _, rec in read_raw_rows(recorded)}
    table_path(recorded).unlink()
    assert rebuild.main(["--records-dir", str(recorded)]) == 0
    assert {rec["run_id"]: rec for _, rec in read_raw_rows(recorded)} == before
    assert rebuild.main(["--records-dir", str(recorded), "--check"]) == 0
    assert "the table matches" in capsys.readouterr().out


def test_rebuild_check_reports_a_difference(recorded, capsys):
    rec = read_raw_rows(recorded)[0][1]
    _edit(table_path(recorded), f",{rec['train_time_s']},", ",0.001,")
    assert rebuild.main(["--records-dir", str(recorded), "--check"]) == 1
    assert f"{rec['run_id']}: train_time_s is '0.001' in the table" in capsys.readouterr().out


def test_rebuild_indexes_a_killed_run_as_interrupted(tmp_path):
    record(tmp_path, "muon", [0])
    log = tmp_path / read_raw_rows(tmp_path)[0][1]["log"]
    text = log.read_text()
    log.write_text(text[: text.index("step:60/60 val_loss:")])  # killed before the last evaluation
    table_path(tmp_path).unlink()
    assert rebuild.main(["--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    assert row.status == "interrupted" and row.steps == 60 and row.final_val_loss != row.final_val_loss  # NaN
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


def test_rebuild_without_logs_is_an_error(tmp_path, capsys):
    assert rebuild.main(["--records-dir", str(tmp_path)]) == 2
    assert "logs does not exist" in capsys.readouterr().err


# ---- sweeps -----------------------------------------------------------------------------------

GRID = ["--optimizer", "muon", "--grid", "lr=0.01,0.02,0.04", "--grid", "weight_decay=0,0.01", "--seeds", "0,1"]


def test_grid_sweep_records_every_trial_budget_and_winner(tmp_path, capsys):
    runner = Counting()
    assert sweep.main(args(tmp_path, *GRID), runner) == 0
    assert runner.calls == 12 and len(read_table(tmp_path)) == 12
    (entry,) = read_entries(sweeps_path(tmp_path), ("sweep",))
    assert entry["budget"]["trials"] == 6 and entry["budget"]["runs"] == 12
    assert entry["budget"]["device_s"] == pytest.approx(read_table(tmp_path)["train_time_s"].sum())
    assert entry["winner"]["overrides"]["lr"] == "0.02"  # the fake loss is lowest at the optimizer's default lr
    out = capsys.readouterr().out
    assert "winner (lowest train time meeting the target under the time rule, then lowest final loss): --set lr=0.02" in out
    assert "next: python scripts/submit.py --track tiny-cpu --optimizer muon --steps 60 --set lr=0.02 --set weight_decay=" in out


def test_sweep_resumes_after_an_interruption(tmp_path, capsys):
    assert sweep.main(args(tmp_path, *GRID), Counting(interrupt_at=5)) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert len(read_table(tmp_path)) == 4 and not sweeps_path(tmp_path).exists()
    runner = Counting()
    assert sweep.main(args(tmp_path, *GRID), runner) == 0
    assert runner.calls == 8  # only what was missing
    again = Counting()
    assert sweep.main(args(tmp_path, *GRID), again) == 0
    assert again.calls == 0
    first, second = read_entries(sweeps_path(tmp_path), ("sweep",))
    assert first["sweep_id"] == second["sweep_id"] and first["budget"]["runs"] == second["budget"]["runs"] == 12
    table = leaderboard(load_records(tmp_path), "tiny-cpu")
    winner = table[table["group"] == second["winner"]["group"]].iloc[0]
    assert (winner.tuning_trials, winner.tuning_runs) == (6, 12)  # counted once, not per invocation


def test_random_search_is_deterministic_and_typed(tmp_path):
    cmd = args(tmp_path, "--optimizer", "muon", "--random", "lr=log:1e-3:1e-1", "--random", "ns_steps=3:6",
               "--trials", "4", "--seeds", "0")
    assert sweep.main(cmd, Counting()) == 0
    (entry,) = read_entries(sweeps_path(tmp_path), ("sweep",))
    lrs = [float(t["overrides"]["lr"]) for t in entry["trials"]]
    assert len(set(lrs)) == 4 and all(1e-3 <= lr <= 1e-1 for lr in lrs)
    assert all(t["overrides"]["ns_steps"] in ("3", "4", "5", "6") for t in entry["trials"])  # an int hyperparameter
    runner = Counting()
    assert sweep.main(cmd, runner) == 0 and runner.calls == 0  # same draws: all reused


@pytest.mark.parametrize("extra, message", [
    (["--grid", "lrr=0.1"], "unknown hyperparameter"),
    (["--grid", "lr=0.1,0.1"], "distinct"),
    (["--random", "lr=log:0:1"], "LO > 0"),
    (["--grid", "lr=0.1", "--random", "lr=0:1"], "one kind of search"),
    (["--grid", "steps=10,20"], "drop --steps"),
])
def test_bad_sweep_arguments_fail_before_any_run(tmp_path, capsys, extra, message):
    runner = Counting()
    assert sweep.main(args(tmp_path, "--optimizer", "muon", *extra), runner) == 2
    assert message in capsys.readouterr().err and runner.calls == 0


def test_find_steps_finds_the_shortest_significant_schedule(tmp_path, capsys):
    runner = Counting()
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "muon", "--seeds", "0-2", "--start", "20", "--tolerance", "0"]
    assert find_steps.main(cmd, runner) == 0
    (entry,) = read_entries(sweeps_path(tmp_path), ("steps",))
    probes = {int(t["overrides"]["steps"]): t["passed"] for t in entry["trials"]}
    best = int(entry["winner"]["overrides"]["steps"])
    assert probes[best] and not probes[best - 1]  # bisected down to one step
    assert 28 < best <= 31  # the fake curve: 1.48 + 4.05 exp(-T/8) crosses 1.60 at T = 28.1
    assert runner.calls == 3 * len(probes) == entry["budget"]["runs"] == len(read_table(tmp_path))
    out = capsys.readouterr().out
    assert f"next: python scripts/submit.py --track tiny-cpu --optimizer muon --steps {best} --seeds 0-4" in out
    again = Counting()
    assert find_steps.main(cmd, again) == 0 and again.calls == 0  # resumable
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


def test_find_steps_brackets_by_the_growth_factor(tmp_path, capsys):
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "muon", "--seeds", "0-2", "--start", "20", "--tolerance", "0",
           "--growth", "1.25"]
    assert find_steps.main(cmd, Counting()) == 0
    (entry,) = read_entries(sweeps_path(tmp_path), ("steps",))
    probed = [int(t["overrides"]["steps"]) for t in entry["trials"]]
    assert 25 in probed and 32 in probed and 40 not in probed  # 20 -> 25 -> 32 (ceil 31.25), never doubled
    best = int(entry["winner"]["overrides"]["steps"])
    assert 28 < best <= 31 and best - 1 in probed  # the same answer as doubling finds
    assert entry["search"]["growth"] == 1.25
    assert find_steps.main([*cmd[:-1], "1"], Counting()) == 2 and "--growth 1" in capsys.readouterr().err


def test_a_step_searchs_records_calibrate_the_steps_rule(tmp_path, capsys):
    """The rule's constants come from what a search leaves in the records: the seeds' spread within
    each configuration, and the loss its probes near the admitted T save per step."""
    calibrate = load_script("calibrate_steps_rule")
    assert calibrate.main(["--records-dir", str(tmp_path)]) == 2
    assert "has two finished runs" in capsys.readouterr().err
    assert calibrate.main(["--records-dir", str(tmp_path), "--track", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "muon", "--seeds", "0-2", "--start", "20", "--tolerance", "0"]
    assert find_steps.main(cmd, Counting()) == 0
    capsys.readouterr()
    assert calibrate.main(["--records-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    constants = {k: float(v) for k, v in re.findall(r"(steps_\w+)=([0-9.]+)", out)}
    assert 0.002 < constants["steps_sigma"] < 0.008  # the fake runs' seed noise is 0.004
    assert constants["steps_threshold"] == pytest.approx(3.09 * constants["steps_sigma"], rel=2e-3)
    assert constants["steps_loss_per_step"] > 0  # a longer schedule ends lower


@pytest.mark.parametrize("losses", [[1.590, 1.592, 1.589], [1.595, 1.598, 1.596], [1.57, 1.60, 1.63], [1.5990, 1.5991, 1.5992],
                                    [1.65, 1.66, 1.64, 1.65]])
def test_the_shortfall_is_below_zero_exactly_when_the_rule_admits(losses):
    target = 1.60
    time_rule, steps_rule = Rule.of_track("tiny-cpu", "time"), Rule.of_track("tiny-cpu", "steps")
    p = scipy.stats.ttest_1samp(losses, target, alternative="less").pvalue
    assert (shortfall(losses, target, time_rule) < 0) == (p < time_rule.alpha)
    margin = (target - np.mean(losses)) * np.sqrt(len(losses))
    assert (shortfall(losses, target, steps_rule) <= 0) == (margin >= steps_rule.threshold)
    assert shortfall([*losses[:-1], None], target, time_rule) == math.inf  # a diverged run


def test_the_next_probe_sits_half_a_tolerance_below_the_secants_crossing():
    # Muon on tiny-cpu: 175 steps miss by 0.198, 350 meet it with 0.004 to spare; the line crosses at 346.5
    assert next_probe(175, 350, 0.198, -0.004, 17) == round(175 + 175 * 0.198 / 0.202 - 8.5)
    # half a tolerance (9) from either end: a probe next to an end would not close the bracket
    assert next_probe(175, 350, 0.198, -50.0, 17) == 184
    assert next_probe(175, 350, 0.001, -0.2, 17) == 184
    assert next_probe(301, 325, 0.0005, -0.006, 16) == 309  # NorMuon: either outcome closes [301, 325] to 16
    assert next_probe(10, 12, 0.1, -0.1, 16) == 11
    assert next_probe(175, 350, math.inf, -0.004, 17) == 262  # a diverged probe: bisection


def test_find_steps_under_the_steps_rule_and_its_budget_on_the_leaderboard(tmp_path, capsys):
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "muon", "--seeds", "0-2", "--start", "20", "--tolerance", "0"]
    assert find_steps.main([*cmd, "--rule", "steps"], Counting()) == 0
    (entry,) = read_entries(sweeps_path(tmp_path), ("steps",))
    assert entry["search"]["rule"] == "steps" and all("margin" in t for t in entry["trials"])
    best = int(entry["winner"]["overrides"]["steps"])
    by_steps = {int(t["overrides"]["steps"]): t for t in entry["trials"]}
    threshold = Rule.of_track("tiny-cpu", "steps").threshold
    assert by_steps[best]["margin"] >= threshold > by_steps[best - 1]["margin"]  # the shortest T the rule admits
    assert f"--steps {best} --seeds 0-4 --rule steps" in capsys.readouterr().out
    assert submit.main(["--records-dir", str(tmp_path), "--optimizer", "muon", "--steps", str(best), "--seeds", "0-2",
                        "--collect-only", "--rule", "steps"]) == 0
    (row,) = leaderboard(load_records(tmp_path), "tiny-cpu", include_unsubmitted=False, rule="steps").itertuples()
    assert row.score == best and row.tuning_trials == len(entry["trials"]) and row.tuning_runs == entry["budget"]["runs"]
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


def test_find_steps_reports_an_unreachable_target(tmp_path, capsys):
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "sgd", "--seeds", "0,1", "--start", "20", "--max-steps", "80"]
    assert find_steps.main(cmd, Counting()) == 1
    assert "no step count up to 80 meets the target" in capsys.readouterr().out
    (entry,) = read_entries(sweeps_path(tmp_path), ("steps",))
    assert entry["winner"] is None and entry["budget"]["runs"] == 3 * 2


@pytest.mark.slow
def test_submit_launches_real_runs(tmp_path, capsys):
    """The default runner: python run.py --quiet in a subprocess, per missing seed."""
    code = submit.main(["--records-dir", str(tmp_path), "--optimizer", "adamw", "--steps", "2", "--no-compile", "--seeds", "0,1"])
    assert code == 1  # two steps are far from the target
    (entry,) = submissions(tmp_path)
    assert entry["n"] == 2 and not entry["evidence"]
    assert verify.main(["--records-dir", str(tmp_path)]) == 0


def test_bench_summarises_recorded_runs(tmp_path, capsys):
    record(tmp_path, "muon", [0, 1, 2])
    record(tmp_path, "adamw", [0])
    bench.main(["--from-records", str(tmp_path), "--optimizers", "muon,adamw,sgd"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    table = read_table(tmp_path)
    muon = table[table["optimizer"] == "muon"]
    assert [line.split(" | ")[0:2] for line in lines] == [["| muon", "3"], ["| adamw", "1"]]  # sgd has no runs: no row
    # the median step time from the logs (the last training line's clock over its step), not from the table bench reads
    per_run = [(lambda t: t.time_ms / t.step)(parse_log(tmp_path / log).training.steps[-1]) for log in muon["log"]]
    assert len(per_run) == 3 and f"| {statistics.median(per_run):.1f} |" in lines[0] and "fake-cpu" in lines[0]


def test_a_log_left_by_a_killed_run_is_reported_as_unfinished_not_as_a_failure(tmp_path, capsys):
    record(tmp_path, "muon", [0])
    (log,) = (tmp_path / "logs").glob("*.txt")
    text = log.read_text()
    killed = log.with_name("killed-run.txt")
    killed.write_text(text[: text.index("==== result ====")])  # a process that died before writing its result
    assert verify.main(["--records-dir", str(tmp_path)]) == 0
    assert "logs/killed-run.txt: unfinished run" in capsys.readouterr().out
    killed.write_text(text.replace("20", "21", 1))  # a complete log that is not indexed is still a problem
    assert verify.main(["--records-dir", str(tmp_path)]) == 1


# ---- verify: each cross-check rejects what only it can see -----------------------------------


def test_verify_reports_edited_harness_code_whose_file_hash_was_updated(recorded, capsys):
    """Embedded harness code edited, and its own manifest entry updated to match: every per-file
    hash agrees, only the harness hash over all files shows the edit."""
    rec = read_raw_rows(recorded)[0][1]
    log = recorded / rec["log"]
    parsed = parse_log(log)
    old = parsed.sections["nanogpt/schedule.py"]
    new = old.replace("return", "return ", 1).replace("  ", " ", 1)  # same length: the parser's section sizes hold
    assert new != old and len(new) == len(old)
    _edit(log, old, new)
    _edit(log, sha256_text(old), sha256_text(new))
    assert parse_log(log).sections["nanogpt/schedule.py"] == new
    assert verify.main(["--records-dir", str(recorded), rec["run_id"]]) == 1
    out = capsys.readouterr().out
    assert "harness_sha256 does not match the embedded harness files" in out and "does not match its recorded sha256" not in out


def test_verify_reports_a_sweep_winner_its_trials_do_not_give(recorded, capsys):
    path = sweeps_path(recorded)
    entry = json.loads(path.read_text())
    loser = next(t for t in entry["trials"] if t["group"] != entry["winner"]["group"])
    entry["winner"] = {**entry["winner"], "group": loser["group"], "overrides": loser["overrides"]}
    path.write_text(json.dumps(entry) + "\n")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    assert f"winner {loser['group']} but its trials give" in capsys.readouterr().out


def test_verify_reports_a_submission_compared_with_no_record_when_there_was_one(recorded, capsys):
    """The second submission (muon) came after the adamw one, which was the record: rewritten, with
    statistics that are right for that claim, as if there had been no record to beat."""
    path = submissions_path(recorded)
    lines = path.read_text().splitlines()
    first, entry = json.loads(lines[0]), json.loads(lines[1])
    assert first["new_record"] and entry["record_test"]["against"] == first["submission_id"]
    steps = json.loads(entry["key"]["hparams"])["steps"]
    entry.update(decide(entry["runs"], entry["target"], steps, None, Rule.of_entry(entry), entry["confidence"]))
    assert entry["record_test"] == {"against": None}
    lines[1] = json.dumps(entry, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    assert f"compared with record None, but the record when it was made was {first['submission_id']!r}" in capsys.readouterr().out


def test_verify_reports_a_complete_log_missing_from_the_table(recorded, capsys):
    rec = read_raw_rows(recorded)[0][1]
    shutil.copy(recorded / rec["log"], recorded / "logs" / "copied-run.txt")
    assert verify.main(["--records-dir", str(recorded)]) == 1
    assert "FAIL logs/copied-run.txt" in capsys.readouterr().out


def test_a_step_search_that_misses_at_the_budget_counts_for_the_budgets_schedule(tmp_path, capsys):
    cmd = ["--records-dir", str(tmp_path), "--optimizer", "muon", "--seeds", "0-2", "--start", "4", "--max-steps", "4"]
    assert find_steps.main(cmd, Counting()) == 1  # 4 steps cannot reach the target
    (entry,) = read_entries(sweeps_path(tmp_path), ("steps",))
    assert entry["winner"] is None and "no step count up to 4 meets the target" in capsys.readouterr().out
    assert submit.main(["--records-dir", str(tmp_path), "--optimizer", "muon", "--steps", "4", "--seeds", "0-2",
                        "--collect-only"]) == 1  # recorded as a miss
    (row,) = leaderboard(load_records(tmp_path), "tiny-cpu", include_unsubmitted=False).itertuples()
    assert not row.evidence and (row.tuning_trials, row.tuning_runs) == (1, 3)


def test_an_entry_at_the_step_searchs_T_counts_the_grid_that_chose_its_hyperparameters_once(tmp_path):
    """A grid at 40 steps, then a step search from its winner (reusing the grid's seed-0 run at 40
    steps), then the submission at the T found: the entry's tuning budget is both searches, each
    distinct trial and run counted once."""
    common = ["--records-dir", str(tmp_path), "--optimizer", "muon"]
    assert sweep.main([*common, "--steps", "40", "--grid", "lr=0.01,0.02", "--seeds", "0"], Counting()) == 0
    (grid,) = read_entries(sweeps_path(tmp_path), ("sweep", "steps"))
    lr = grid["winner"]["overrides"]["lr"]
    searched = Counting()
    assert find_steps.main([*common, "--set", f"lr={lr}", "--seeds", "0-2", "--start", "40", "--growth", "1.25"], searched) == 0
    _, steps = read_entries(sweeps_path(tmp_path), ("sweep", "steps"))
    T = steps["winner"]["overrides"]["steps"]
    assert submit.main([*common, "--set", f"lr={lr}", "--steps", T, "--seeds", "0-2", "--collect-only"]) == 0
    (row,) = leaderboard(load_records(tmp_path), "tiny-cpu", include_unsubmitted=False).itertuples()
    assert int(T) < 40 and searched.calls == steps["budget"]["runs"] - 1  # the grid's run at 40 steps was reused
    assert (row.tuning_trials, row.tuning_runs) == (2 + steps["budget"]["trials"] - 1, 2 + steps["budget"]["runs"] - 1)
    assert row.tuning_device_s == pytest.approx(read_table(tmp_path)["train_time_s"].sum())  # every run, once
