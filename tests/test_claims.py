"""The claims table from synthetic submissions whose answer is known independently: clearly faster
runs confirm a claim and the reversed claim is not confirmed; two optimizers with one profile
confirm neither direction; a side that misses the target carries the burden of its claim; matched
steps compare final losses; the steps rule compares T; a side with no submission is not measured.
The README section between the claims markers is rewritten, the leaderboard's left alone."""

import dataclasses
import functools
import math
import re

import fake_runs
import numpy as np
import pytest
import scipy.stats as sps
from conftest import load_script
from fake_runs import fake_run

from analysis import stats
from analysis.claims import CLAIMS, Claim, Side, evaluate, evaluate_all, to_markdown
from analysis.leaderboard import README_END, README_START, load_records, readme_markers, replace_readme_section

submit, claims_cli = load_script("submit"), load_script("claims")
TRACK = "tiny-moe-cpu"
MUON = Side("muon", "Muon")
NEWTON = Side("newton_muon", "Newton-Muon")


def claim(a: Side, b: Side, *measures: str) -> Claim:
    return Claim("Paper", "0000.00000", "A beats B", True, a, b, measures, (TRACK,))


def submit_runs(records_dir, optimizer: str, steps: int, *sets: str, seeds: str = "0-2", runner=fake_run) -> None:
    argv = ["--records-dir", str(records_dir), "--track", TRACK, "--optimizer", optimizer, "--steps", str(steps), "--seeds", seeds]
    submit.main([*argv, *(a for s in sets for a in ("--set", s))], runner)


def verdicts(records_dir, c: Claim) -> dict[str, object]:
    return {v.measure: v for v in evaluate(c, load_records(records_dir).submissions)}


@pytest.fixture
def profiles(monkeypatch):
    """Set a synthetic optimizer's profile (loss floor, decay in steps, seconds per step)."""
    return lambda optimizer, profile: monkeypatch.setitem(fake_runs.PROFILES, optimizer, profile)


def test_clearly_faster_runs_confirm_the_claim_and_the_reversed_claim_is_not_confirmed(tmp_path, profiles):
    profiles("newton_muon", (1.45, 8.0, 0.030))  # half Muon's step time, the same losses
    submit_runs(tmp_path, "newton_muon", 60)
    submit_runs(tmp_path, "muon", 60)
    forward = verdicts(tmp_path, claim(NEWTON, MUON, "rule"))["time"]
    assert forward.verdict == "confirmed" and forward.why == ""
    change = float(re.search(r"per run \(([-+][\d.]+) %", forward.measured).group(1))
    assert -55 < change < -45 and "n 3/3, T 60/60" in forward.measured  # about half the time (2 % noise per run)
    reverse = verdicts(tmp_path, claim(MUON, NEWTON, "rule"))["time"]
    assert (reverse.verdict, reverse.why) == ("not confirmed", "Newton-Muon better")


def test_one_profile_for_both_confirms_neither_direction(tmp_path, profiles):
    profiles("newton_muon", fake_runs.PROFILES["muon"])
    submit_runs(tmp_path, "newton_muon", 60)
    submit_runs(tmp_path, "muon", 60)
    both = [verdicts(tmp_path, claim(a, b, "time"))["time"] for a, b in ((NEWTON, MUON), (MUON, NEWTON))]
    ahead, behind = sorted(both, key=lambda v: v.verdict)  # "inconclusive" < "not confirmed"
    assert (ahead.verdict, behind.verdict) == ("inconclusive", "not confirmed")  # the one ahead by chance, the other
    assert "within noise" in behind.why  # not "better": the reverse test is not significant either
    assert "(-" in ahead.measured and "(+" in behind.measured  # inconclusive is the direction whose mean is ahead
    assert (ahead.runs_needed or ahead.runs_needed_each or math.inf) > 3  # more runs than now, on A or on each side


def test_a_side_that_misses_the_target_carries_the_burden(tmp_path):
    submit_runs(tmp_path, "sgd", 60)  # the SGD profile's floor (1.75) lies above the target
    submit_runs(tmp_path, "muon", 60)
    sgd = Side("sgd", "SGD")
    assert verdicts(tmp_path, claim(sgd, MUON, "time"))["time"].why == "Muon better: no submission of SGD meets the time rule"
    against = verdicts(tmp_path, claim(MUON, sgd, "time"))["time"]  # SGD's time is unknown, not infinite
    assert (against.verdict, against.why) == ("inconclusive", "no submission of SGD meets the time rule")


def test_final_loss_at_matched_steps_uses_the_longest_common_schedule(tmp_path, profiles):
    profiles("mona", (1.40, 8.0, 0.060))  # a lower floor than Muon's 1.45, the same speed
    submit_runs(tmp_path, "mona", 60)
    submit_runs(tmp_path, "mona", 30)
    submit_runs(tmp_path, "muon", 30)
    submit_runs(tmp_path, "muon", 60)
    submit_runs(tmp_path, "muon", 90)  # no MONA at 90 steps: not compared
    found = verdicts(tmp_path, claim(Side("mona", "MONA"), MUON, "rule", "loss"))
    assert list(found) == ["time", "loss"]  # "rule" is the track's rule
    assert found["loss"].verdict == "confirmed" and found["loss"].measured.startswith("at T = 60: 1.4")
    assert found["time"].verdict != "confirmed"  # equal speed: no time claim


def test_diverged_runs_are_named_in_the_loss_comparison(tmp_path, profiles):
    profiles("mona", (1.40, 8.0, 0.060))
    submit_runs(tmp_path, "mona", 60, runner=functools.partial(fake_run, diverge_seeds=(1,)))
    submit_runs(tmp_path, "muon", 60)
    found = verdicts(tmp_path, claim(Side("mona", "MONA"), MUON, "rule", "loss"))
    assert "(n 2/3, diverged 1/0;" in found["loss"].measured  # the two completed runs only, and the third named
    assert found["time"].why == "Muon better: no submission of MONA meets the time rule"  # a divergence is no evidence


def test_the_steps_rule_compares_schedule_lengths(tmp_path, profiles):
    profiles("newton_muon", (1.45, 3.0, 0.060))  # converges in far fewer steps, same speed per step
    submit_runs(tmp_path, "newton_muon", 40)
    submit_runs(tmp_path, "muon", 200)
    found = verdicts(tmp_path, claim(NEWTON, MUON, "steps"))["steps"]
    assert found.verdict == "confirmed" and found.measured.startswith("T 40 vs 200 (-80.0 %)")
    assert verdicts(tmp_path, claim(MUON, NEWTON, "steps"))["steps"].why == "Newton-Muon better"


def test_not_measured_without_a_submission_of_each_side_and_pinned_hyperparameters_count(tmp_path, profiles):
    profiles("muon2", fake_runs.PROFILES["muon"])
    submit_runs(tmp_path, "muon", 60)
    submit_runs(tmp_path, "muon2", 60, "ns_steps=5")  # not the claimed Muon² with 3 NS steps
    muon2_claims = [dataclasses.replace(c, tracks=(TRACK,)) for c in CLAIMS if c.paper == "Muon²"]
    found = evaluate_all(load_records(tmp_path).submissions, muon2_claims)
    assert {v.verdict for v in found} == {"not measured"}
    assert found[0].why == "no submission of Muon² (3 NS steps)"


def test_cli_writes_the_claims_section_and_leaves_the_leaderboard_alone(tmp_path, capsys):
    start, end = readme_markers("claims")
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\nboard\n{README_END}\n\n## Claims\n\n{start}\nold\n{end}\n")
    assert claims_cli.main(["--records-dir", str(tmp_path / "none"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"{README_START}\nboard\n{README_END}\n") and "old" not in text
    body = text[text.index(start) + len(start):text.index(end)]
    assert body == "\n" + to_markdown(evaluate_all([]))  # exactly the generated table
    rows = [line for line in body.splitlines() if line.startswith("| ") and "---" not in line][1:]
    n_rows = sum(len(c.tracks) * len({"rule" if m == "rule" else m for m in c.measures}) for c in CLAIMS)
    assert len(rows) == n_rows and all("**not measured**" in r for r in rows)  # no records: nothing measured
    replace_readme_section(readme, "new board")  # the default section is still the leaderboard
    assert readme.read_text().startswith(f"{README_START}\nnew board\n{README_END}\n")
    readme.write_text("# no markers\n")
    with pytest.raises(Exception, match="no '<!-- claims:start -->' ... '<!-- claims:end -->' markers"):
        replace_readme_section(readme, "x", "claims")


def test_runs_of_each_side_settle_what_more_runs_of_one_side_cannot():
    """An inconclusive claim whose B has only 3 runs: no number of A's alone passes Welch's test at
    80 % power, but n of each does (checked by simulation), and n - 1 of each would not be enough."""
    a, b = [65.0, 66.5, 64.4], [68.0, 71.3, 65.1]
    assert stats.runs_for_welch(a, b) is None  # B's own 3 runs leave too much doubt
    n = stats.runs_for_welch(a, b, each=True)
    assert n is not None and n > 3
    rng = np.random.default_rng(0)

    def power(k: int) -> float:
        x = rng.normal(np.mean(a), np.std(a, ddof=1), (4000, k))
        y = rng.normal(np.mean(b), np.std(b, ddof=1), (4000, k))
        return float(np.mean(sps.ttest_ind(x, y, axis=1, equal_var=False, alternative="less").pvalue < stats.ALPHA))

    assert power(n) >= 0.75 and power(n - 1) < 0.8
    # the pairwise rule with n runs each: gain / sqrt(2/n) must reach 0.004 + z(0.8) * 0.0013
    need = 0.004 + sps.norm.ppf(0.8) * 0.0013
    assert stats.runs_for_pairwise([3.2780], 1000, [3.2800], 1000, 0.0045 / 100, 0.004, 0.0013, each=True) == \
        math.ceil(2 * (need / 0.002) ** 2)
