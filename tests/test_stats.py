"""Statistics of run groups against hand-computed values, scipy, and simulation; edge cases
(n = 1, no spread, every run missing the target, a diverged run in the set)."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from analysis import stats


def test_t_interval_matches_the_textbook_formula():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, sd sqrt(2.5), se sqrt(0.5); t(0.975, 4) = 2.7764 (tables)
    lo, hi = stats.t_interval(x)
    assert lo == pytest.approx(3 - 2.7764 * math.sqrt(0.5), abs=1e-3)
    assert hi == pytest.approx(3 + 2.7764 * math.sqrt(0.5), abs=1e-3)


def test_one_sided_test_matches_hand_computation_and_a_table_value():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    res = stats.below_target(x, 5.0)
    t = (3.0 - 5.0) / math.sqrt(0.5)
    assert res.statistic == pytest.approx(t)
    assert res.p == pytest.approx(sp.t.cdf(t, 4))
    assert res.p == pytest.approx(0.0237, abs=2e-4)  # one-sided p of t = -2.83 with 4 degrees of freedom
    assert stats.below_target(x, 1.0).p == pytest.approx(1 - 0.0237, abs=2e-4)  # the other side


def test_welch_matches_the_satterthwaite_formula():
    x, y = np.array([10.1, 10.4, 9.9, 10.2]), np.array([11.0, 12.1, 11.5, 10.9, 11.8])
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    res = stats.welch_less(x, y)
    assert (res.statistic, res.df) == (pytest.approx(t), pytest.approx(df))
    assert res.p == pytest.approx(sp.t.cdf(t, df))
    assert res.p < 0.01


def test_bootstrap_is_reproducible_and_agrees_with_t_on_a_large_sample():
    x = np.random.default_rng(1).normal(10.0, 1.0, 200)
    first, second = stats.bootstrap_interval(x), stats.bootstrap_interval(x)
    assert first == second  # fixed seed: verify recomputes the same numbers
    t_lo, t_hi = stats.t_interval(x)
    assert first[0] == pytest.approx(t_lo, abs=0.05) and first[1] == pytest.approx(t_hi, abs=0.05)
    assert first[0] < x.mean() < first[1]


def test_single_run_has_no_interval_and_no_test():
    s = stats.summarize([1.55])
    assert (s.n, s.mean) == (1, 1.55)
    assert math.isnan(s.sd) and all(math.isnan(v) for v in (*s.ci_t, *s.ci_bootstrap))
    assert math.isnan(stats.below_target([1.55], 1.6).p)
    assert stats.runs_for_target([1.55], 1.6) is None  # no spread estimate


def test_no_spread_gives_explicit_answers_without_warnings():
    with np.errstate(all="raise"):
        assert stats.t_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
        assert stats.bootstrap_interval([1.5, 1.5, 1.5]) == (1.5, 1.5)
        assert stats.below_target([1.5, 1.5], 1.6).p == 0.0
        assert stats.below_target([1.7, 1.7], 1.6).p == 1.0


def test_diverged_runs_are_dropped_from_the_numbers():
    """A diverged run has no final loss (None) or a NaN: statistics use the finite values; the
    submission counts the divergence separately (tests/test_scripts_records.py)."""
    s = stats.summarize([1.55, None, float("nan"), 1.57])
    assert s.n == 2 and s.mean == pytest.approx(1.56)


def test_every_run_missing_the_target():
    losses = [1.65, 1.66, 1.64]
    assert stats.below_target(losses, 1.6).p > 0.9
    assert stats.runs_for_target(losses, 1.6) is None  # more runs cannot help
    assert math.isnan(stats.summarize([]).mean)  # and no time to target at all


def test_runs_for_target_reaches_the_promised_power_in_simulation():
    mean, sd, target = 1.590, 0.01, 1.60
    n = stats.runs_for_target([mean - sd, mean, mean + sd], target)  # sample sd of these three = sd
    assert n is not None and 5 <= n <= 40
    rng = np.random.default_rng(0)
    for size, lo, hi in ((n, 0.77, 0.90), (max(n - 3, 2), 0.0, 0.78)):
        draws = rng.normal(mean, sd, (4000, size))
        power = np.mean(sp.ttest_1samp(draws, target, axis=1, alternative="less").pvalue < stats.ALPHA)
        assert lo <= power <= hi, (size, power)


def test_runs_needed_shrinks_with_the_effect():
    small = stats.runs_for_target([1.595, 1.59, 1.585], 1.6)
    large = stats.runs_for_target([1.575, 1.57, 1.565], 1.6)
    assert large < small


def test_runs_for_welch_is_enough_in_simulation():
    record = [10.0, 10.3, 9.8, 10.1, 10.2, 10.0, 10.3, 9.9, 10.1, 10.2]
    mine = [9.7, 10.0, 9.8]
    n = stats.runs_for_welch(mine, record)
    assert n is not None and n > len(mine)
    rng = np.random.default_rng(0)
    draws = rng.normal(np.mean(mine), np.std(mine, ddof=1), (3000, n))
    ref = np.broadcast_to(record, (3000, len(record)))
    power = np.mean(sp.ttest_ind(draws, ref, axis=1, equal_var=False, alternative="less").pvalue < stats.ALPHA)
    assert power >= 0.75
    assert stats.runs_for_welch([10.5, 10.6], record) is None  # slower than the record: no n helps
    assert stats.runs_for_welch(mine, record[:3]) is None  # the record's own 3 runs leave too much doubt


def test_speedup_ratio_interval():
    base, mine = [10.0, 10.4, 9.8, 10.2], [5.0, 5.1, 4.9, 5.2]
    point, lo, hi = stats.ratio_interval(base, mine)
    assert point == pytest.approx(np.mean(base) / np.mean(mine))
    assert lo < point < hi and 1.8 < lo and hi < 2.2
    assert math.isnan(stats.ratio_interval(base, [5.0])[1])


def test_fmt_marks_missing_numbers_and_formats_the_others():
    assert stats.fmt(1.23456, ".2f") == "1.23" and stats.fmt(3, "d") == "3" and stats.fmt(np.float32(0.5), ".1f") == "0.5"
    assert stats.fmt(None, ".2f") == stats.fmt(math.nan, ".2f") == stats.fmt(np.float64("nan"), ".1f") == "—"
    assert stats.fmt(math.nan, ".3g", "n/a") == "n/a"
    assert stats.fmt(math.inf, ".1f") == "inf"  # infinite is a number (e.g. a t statistic without spread)
