"""The two rules' constants, their sources, and their boundaries.

- `time`, modded-nanogpt's main track (README, "Rules"): the final losses of n runs of one schedule
  must satisfy scipy.stats.ttest_1samp(losses, target, alternative="less").pvalue < 0.01.
- `steps`, modded-nanogpt's optimization track (track 3): sigma fixed at 0.0013 and p < 0.001, i.e.
  (target - mean) * sqrt(n) >= 0.004; against a record, (dloss + dsteps * 0.0045 / 100) /
  sqrt(1/n1 + 1/n2) >= 0.004.
- First crossing, AlgoPerf's way: the median over the runs, a run that missed counting as infinite.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import stats
from analysis.calibration import calibrate
from analysis.leaderboard import crossing_cell
from analysis.submissions import Rule, assess, first_crossing
from nanogpt.tracks import TRACKS, Track

TARGET = 3.28


def fact(loss, seed=0, status="ok", reached=True, time_s=10.0, step=100):
    return {"run_id": f"r{seed}", "seed": seed, "status": status, "final_val_loss": loss if status == "ok" else None,
            "reached_target": reached, "time_to_target_s": time_s if reached else None, "steps_to_target": step if reached else None,
            "tokens_to_target": None, "train_time_s": 12.0, "world_size": 1, "contended": False}


def test_constants_and_their_sources():
    assert stats.ALPHA == 0.01  # modded-nanogpt README: p < 0.01, one-sided t-test of the final losses
    defaults = Track.__dataclass_fields__
    assert defaults["rule"].default == "time"
    assert defaults["steps_sigma"].default == 0.0013  # track 3: sigma fixed
    assert defaults["steps_threshold"].default == 0.004  # track 3: p < 0.001 -> 0.0013 * z(0.999)
    assert 0.0013 * sps.norm.isf(0.001) == pytest.approx(0.004, abs=2e-5)
    assert defaults["steps_loss_per_step"].default == pytest.approx(0.0045 / 100)  # track 3: 0.0045 loss per 100 steps
    assert {t.rule for t in TRACKS.values()} == {"time"}  # tiny-cpu and the GPT-2 tracks rank by time
    rule = Rule.of_track("gpt2-small", "steps")  # the GPT-2 tracks judge by track 3's constants
    assert (rule.sigma, rule.threshold, rule.loss_per_step, rule.alpha) == (0.0013, 0.004, 0.0045 / 100, 0.01)
    tiny = Rule.of_track("tiny-cpu", "steps")  # tiny-cpu by its own, measured (scripts/calibrate_steps_rule.py)
    assert tiny.sigma > rule.sigma and tiny.loss_per_step > rule.loss_per_step
    assert tiny.threshold == pytest.approx(tiny.sigma * sps.norm.isf(0.001), abs=1e-4)


def test_the_steps_rules_constants_are_measured_on_the_tracks_own_records():
    """sigma pools the seed-to-seed spread within configurations (weighted by n - 1; other tracks,
    failed runs and single runs left out); the threshold is z(0.999) sigma, as track 3's; the loss
    per step is the median over optimizers of the slope of each one's latest step search near its
    admitted T (probes beyond a factor 1.25 of it left out)."""
    key = {"track": "tiny-cpu", "track_sha256": "t", "code_sha256": "c", "harness_sha256": "h", "world_size": 1, "status": "ok"}
    rows = [key | {"optimizer": "a", "hparams": '{"steps": 100}', "final_val_loss": x} for x in (1.0, 1.2)]
    rows += [key | {"optimizer": "b", "hparams": '{"steps": 200}', "final_val_loss": x} for x in (2.0, 2.1, 2.2)]
    rows += [key | {"optimizer": "b", "hparams": '{"steps": 300}', "final_val_loss": 9.0},
             key | {"optimizer": "b", "hparams": '{"steps": 200}', "final_val_loss": 5.0, "status": "diverged"},
             key | {"optimizer": "a", "hparams": '{"steps": 100}', "final_val_loss": 1.9, "track": "other"}]

    def search(optimizer, probes, admitted, date):
        return {"kind": "steps", "track": "tiny-cpu", "optimizer": optimizer, "date": date,
                "winner": admitted and {"overrides": {"steps": str(admitted)}},
                "trials": [{"overrides": {"steps": str(t)}, "mean_final_val_loss": m} for t, m in probes]}

    searches = [search("a", [(100, 1.60), (110, 1.59), (120, 1.58), (300, 1.0)], 110, "2026-12-03"),
                search("a", [(100, 1.70), (110, 1.50)], 110, "2026-12-01"),  # an earlier search of a
                search("b", [(200, 1.60), (220, 1.54)], 220, "2026-12-02"),
                search("c", [(200, 1.60), (400, 1.0)], 200, "2026-12-02"),  # one probe near T: no slope
                search("d", [(200, 1.60), (210, 1.0)], None, "2026-12-02")]  # nothing admitted
    c = calibrate(pd.DataFrame(rows), searches, "tiny-cpu")
    assert c.df == 3 and c.sigma == pytest.approx(math.sqrt((0.02 + 0.02) / 3))
    assert {s.optimizer: s.sigma for s in c.spreads} == pytest.approx({"a": math.sqrt(0.02), "b": math.sqrt(0.02 / 2)})
    assert c.threshold == pytest.approx(sps.norm.isf(0.001) * c.sigma)
    assert {s.optimizer: s.loss_per_step for s in c.slopes} == pytest.approx({"a": 0.001, "b": 0.003})
    assert c.loss_per_step == pytest.approx(0.002)


def test_time_rule_is_scipys_one_sided_t_test_just_inside_and_outside_p_001():
    crit = sps.t.ppf(0.01, 2)  # n = 3: t must be below this
    for factor, passes in ((1.001, True), (0.999, False)):
        eps = 0.01
        mean = TARGET + factor * crit * eps / math.sqrt(3)
        losses = [mean - eps, mean, mean + eps]
        expected = sps.ttest_1samp(losses, TARGET, alternative="less").pvalue
        a = assess([fact(x, i) for i, x in enumerate(losses)], TARGET, Rule("time"))
        assert a["test"]["p"] == pytest.approx(expected)
        assert bool(expected < 0.01) is passes and a["test"]["passed"] is passes and a["evidence"] is passes


def test_steps_rule_just_inside_and_outside_the_threshold():
    for delta, passes in ((+1e-6, True), (-1e-6, False)):
        mean = TARGET - (0.004 + delta) / 2  # n = 4: margin = (target - mean) * 2
        losses = [mean - 0.01, mean + 0.01, mean - 0.02, mean + 0.02]  # the spread does not matter: sigma is fixed
        a = assess([fact(x, i) for i, x in enumerate(losses)], TARGET, Rule("steps"))
        assert a["test"]["margin"] == pytest.approx(0.004 + delta, abs=1e-9)
        assert a["test"]["passed"] is passes and a["evidence"] is passes
        assert a["test"]["z"] == pytest.approx((0.004 + delta) / 0.0013)
    one = assess([fact(TARGET - 0.0041)], TARGET, Rule("steps"))  # one run passes when its margin does
    assert one["evidence"] and assess([fact(TARGET - 0.0041)], TARGET, Rule("time"))["reasons"][0].startswith("a single run")


def test_pairwise_rule_trades_steps_for_loss_at_0_0045_per_100_steps():
    new, record = [3.2790] * 4, [3.2800] * 4  # dloss = 0.001; sqrt(1/4 + 1/4) = 0.7071
    inside = stats.pairwise_margin(new, 1000, record, 1050, 0.0045 / 100)  # (0.001 + 50 * 0.000045) / 0.7071 = 0.004596
    outside = stats.pairwise_margin(new, 1000, record, 1040, 0.0045 / 100)  # (0.001 + 40 * 0.000045) / 0.7071 = 0.003960
    assert inside == pytest.approx(0.00325 / math.sqrt(0.5)) and inside >= 0.004
    assert outside == pytest.approx(0.0028 / math.sqrt(0.5)) and outside < 0.004
    # more steps than the record must be paid for with a lower loss
    assert stats.pairwise_margin([3.2700] * 4, 1100, record, 1000, 0.0045 / 100) == pytest.approx((0.01 - 0.0045) / math.sqrt(0.5))


def test_runs_needed_under_the_fixed_sigma_rules():
    # margin grows as sqrt(n): at a gap of 0.002 the 80 %-power margin 0.004 + 0.8416 * 0.0013 needs n = 7
    n = stats.runs_for_margin([TARGET - 0.002] * 2, TARGET, 0.004, 0.0013)
    assert n == math.ceil(((0.004 + sps.norm.ppf(0.8) * 0.0013) / 0.002) ** 2) == 7
    assert stats.runs_for_margin([TARGET + 0.001], TARGET, 0.004, 0.0013) is None  # above the target: no n helps
    assert stats.runs_for_pairwise([3.2790], 1000, [3.2800] * 4, 1000, 0.0045 / 100, 0.004, 0.0013) is None  # 1/n2 alone is too much


def test_first_crossing_is_algoperfs_median_with_misses_infinite():
    assert stats.median_with_misses([10.0], 3) == math.inf  # 2 of 3 runs missed
    assert stats.median_with_misses([10.0, 12.0], 3) == 12.0  # 1 of 3 missed: the median is still a run's
    assert stats.median_with_misses([10.0, 12.0], 4) == math.inf  # half missed
    assert stats.median_with_misses([10.0, 12.0, 14.0], 3) == 12.0
    facts = [fact(3.27, 0, time_s=10.0, step=100), fact(3.29, 1, reached=False), fact(3.29, 2, reached=False)]
    fc = first_crossing(facts)
    assert fc == {"median_time_s": math.inf, "median_steps": math.inf, "n_reached": 1}
    diverged = [fact(3.27, 0), fact(None, 1, status="diverged", reached=False)]
    assert first_crossing(diverged)["median_time_s"] == math.inf  # a diverged run is a miss, not absent

    class Row:
        rule, crossing_time, crossing_steps, n_reached, n = "time", fc["median_time_s"], fc["median_steps"], 1, 3

    assert crossing_cell(Row) == "∞ (1/3 reached)"
    Row.rule = "steps"
    assert crossing_cell(Row) == "∞ (1/3 reached)"
    assert np.isinf(stats.median_with_misses([], 2))


# ---- a sweep's winner is the trial the rule ranks first ------------------------------------------


def trial(name, steps, loss, train_s, first_crossing_s, passed=True, diverged=0):
    return {"overrides": {"lr": name}, "group": name, "steps": steps, "n": 2, "n_diverged": diverged, "passed": passed,
            "mean_final_val_loss": loss, "mean_train_time_s": train_s, "mean_time_to_target_s": first_crossing_s}


def test_sweep_winner_follows_the_rule_not_the_first_crossing():
    from analysis.sweeps import choose_winner

    # One schedule length: early crossing but a worse final loss (a) against the better final loss (b).
    # Their train times differ by noise only (same steps), so the final loss decides under the time rule;
    # the old first-crossing criterion (entries without a rule) picks a.
    same_t = [trial("a", 400, 1.585, 60.0, 50.0), trial("b", 400, 1.550, 60.5, 55.0)]
    assert choose_winner(same_t, "time")["group"] == "b"
    assert choose_winner(same_t, "steps")["group"] == "b"
    assert choose_winner(same_t, None)["group"] == "a"
    # Different schedules: the time rule ranks by the whole runs' train time, the steps rule by T.
    lengths = [trial("short", 300, 1.590, 45.0, 44.0), trial("long", 400, 1.540, 60.0, 40.0)]
    assert choose_winner(lengths, "time")["group"] == "short"
    assert choose_winner(lengths, "steps")["group"] == "short"
    cheap_steps = [trial("slow-steps", 300, 1.59, 70.0, 60.0), trial("fast-steps", 400, 1.59, 60.0, 50.0)]
    assert choose_winner(cheap_steps, "time")["group"] == "fast-steps"  # fewer steps, but each one dearer
    assert choose_winner(cheap_steps, "steps")["group"] == "slow-steps"
    # A trial that misses the target never beats one that meets it; with none meeting it, the lowest
    # final loss among trials without a diverged run.
    assert choose_winner([trial("miss", 300, 1.62, 40.0, None, passed=False), trial("hit", 400, 1.59, 60.0, 58.0)],
                         "time")["group"] == "hit"
    none_met = [trial("x", 400, 1.63, 60.0, None, passed=False), trial("y", 400, 1.61, 60.0, None, passed=False),
                trial("z", 400, 1.50, 60.0, None, passed=False, diverged=1)]
    assert choose_winner(none_met, "time")["group"] == "y"


def test_a_one_seed_trial_meets_the_time_rule_at_or_below_the_target():
    from analysis.sweeps import judge_trial

    rule = Rule("time")
    for loss, passes in ((TARGET, True), (TARGET + 1e-6, False), (TARGET - 0.1, True)):
        row = {"run_id": "r", "seed": 0, "status": "ok", "final_val_loss": loss, "reached_target": passes,
               "time_to_target_s": 1.0 if passes else None, "steps_to_target": 1 if passes else None,
               "tokens_to_target": None, "train_time_s": 1.0, "world_size": 1, "contended": False}
        t = judge_trial({"n_diverged": 0, "mean_final_val_loss": loss}, [row], TARGET, rule)
        assert t["passed"] is passes and t["p"] is None
