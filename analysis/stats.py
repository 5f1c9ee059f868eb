"""Statistics of run groups: means with confidence intervals, the tests a submission must pass,
and how many runs a test would need.

Everything is computed with scipy.stats (t distribution, one-sample and Welch t-tests, bootstrap,
non-central t). The bootstrap uses a fixed random seed so that `verify` recomputes exactly the
numbers a submission recorded. Degenerate inputs (n = 0 or 1, zero spread) give NaN intervals
or explicit answers instead of warnings.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.01  # modded-nanogpt's main track: ttest_1samp(losses, target, alternative="less").pvalue < 0.01
POWER = 0.8
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
MAX_RUNS = 1000  # "more runs needed" searches stop here


def fmt(x, spec: str, missing: str = "—") -> str:
    """`x` formatted with `spec`, or `missing` when there is no number (None or NaN): the one
    formatter of statistics that may be absent (a group with no run at the target, one seed)."""
    return missing if x is None or (isinstance(x, numbers.Real) and math.isnan(x)) else format(x, spec)


def clean(values) -> np.ndarray:
    """Finite values only (a diverged run has no final loss; the caller counts it separately)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation and two 95 % intervals of the mean (t-based and bootstrap BCa)."""

    n: int
    mean: float
    sd: float
    ci_t: tuple[float, float]
    ci_bootstrap: tuple[float, float]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    x = clean(values)
    if len(x) < 2:
        return (math.nan, math.nan)
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0:
        return (mean, mean)
    lo, hi = stats.t.interval(confidence, len(x) - 1, loc=mean, scale=sd / math.sqrt(len(x)))
    return (float(lo), float(hi))


def bootstrap_interval(values, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                       n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    x = clean(values)
    if len(x) < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          rng=np.random.default_rng(seed), method="BCa")
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarize(values, confidence: float = CONFIDENCE) -> Summary:
    x = clean(values)
    mean = float(x.mean()) if len(x) else math.nan
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return Summary(len(x), mean, sd, t_interval(x, confidence), bootstrap_interval(x, confidence))


@dataclass(frozen=True)
class TTest:
    statistic: float
    p: float
    df: float

    def as_dict(self) -> dict:
        return asdict(self)


def below_target(values, target: float) -> TTest:
    """One-sided one-sample t-test of H1: mean < target. Needs two or more values."""
    x = clean(values)
    if len(x) < 2:
        return TTest(math.nan, math.nan, float(max(len(x) - 1, 0)))
    if np.all(x == x[0]):  # no spread: scipy's limit (t = -inf, p = 0 when below), without its warning
        below = x[0] < target
        return TTest(-math.inf if below else math.inf, 0.0 if below else 1.0, float(len(x) - 1))
    res = stats.ttest_1samp(x, target, alternative="less")
    return TTest(float(res.statistic), float(res.pvalue), float(res.df))


def welch_less(values, reference) -> TTest:
    """Welch's unequal-variance t-test of H1: mean(values) < mean(reference)."""
    x, y = clean(values), clean(reference)
    if len(x) < 2 or len(y) < 2:
        return TTest(math.nan, math.nan, math.nan)
    res = stats.ttest_ind(x, y, equal_var=False, alternative="less")
    return TTest(float(res.statistic), float(res.pvalue), float(res.df))


def _power_less(delta: float, se: float, df: float, alpha: float) -> float:
    """Probability that a one-sided t-test (H1: effect < 0) rejects when the true effect is `delta`."""
    return float(stats.nct.cdf(stats.t.ppf(alpha, df), df, delta / se))


def runs_for_target(values, target: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """How many runs in total the target test would need to pass with probability `power`, if the
    observed mean and standard deviation were the truth. None when it cannot be estimated (fewer
    than two values) or no number of runs would do (mean not below the target)."""
    x = clean(values)
    if len(x) < 2 or x.mean() >= target:
        return None
    sd = x.std(ddof=1)
    if sd == 0:
        return 2
    for n in range(2, MAX_RUNS + 1):
        if _power_less(x.mean() - target, sd / math.sqrt(n), n - 1, alpha) >= power:
            return n
    return None


def runs_for_welch(values, reference, alpha: float = ALPHA, power: float = POWER, each: bool = False) -> int | None:
    """How many runs the new group would need for Welch's test against `reference` (kept as is)
    to pass with probability `power`, under the same plug-in assumption as `runs_for_target`.
    With `each`, the runs each group would need, both grown to that number (when the reference's
    own runs leave too much doubt for any number of new ones)."""
    x, y = clean(values), clean(reference)
    if len(x) < 2 or len(y) < 2 or x.mean() >= y.mean():
        return None
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    for n in range(2, MAX_RUNS + 1):
        ny = n if each else len(y)
        a, b = vx / n, vy / ny
        if a + b == 0:
            return n
        df = (a + b) ** 2 / ((a * a / (n - 1) if a else 0) + (b * b / (ny - 1) if b else 0))
        if _power_less(x.mean() - y.mean(), math.sqrt(a + b), df, alpha) >= power:
            return n
    return None


def ratio_interval(base, values, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                   n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float, float]:
    """Speedup mean(base) / mean(values) with a percentile bootstrap interval (each group resampled
    independently). The interval is NaN when either group has fewer than two values."""
    x, y = clean(base), clean(values)
    if not len(x) or not len(y):
        return (math.nan, math.nan, math.nan)
    point = float(x.mean() / y.mean())
    if len(x) < 2 or len(y) < 2:
        return (point, math.nan, math.nan)
    res = stats.bootstrap((x, y), lambda a, b, axis: np.mean(a, axis=axis) / np.mean(b, axis=axis), paired=False,
                          vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                          rng=np.random.default_rng(seed), method="percentile")
    return (point, float(res.confidence_interval.low), float(res.confidence_interval.high))


# ---- the fixed-sigma rule of modded-nanogpt's optimization track (track 3) ----------------------
# The constants are track data (nanogpt.tracks.Track.steps_sigma, steps_threshold,
# steps_loss_per_step); the formulas are here.


def steps_margin(values, target: float) -> float:
    """(target - mean) * sqrt(n) over the finite values: the statistic that track 3 compares with its
    threshold (sigma * z = 0.0013 * 3.09 = 0.004 for p < 0.001 with sigma fixed). NaN without values."""
    x = clean(values)
    return float((target - x.mean()) * math.sqrt(len(x))) if len(x) else math.nan


def pairwise_margin(values, steps: int, reference, reference_steps: int, loss_per_step: float) -> float:
    """Track 3's comparison with a record: (dloss + dsteps * loss_per_step) / sqrt(1/n1 + 1/n2), with
    dloss = mean(reference) - mean(values) (lower loss is better) and dsteps = reference_steps - steps
    (fewer steps is better), each step worth `loss_per_step` of loss. NaN when a group is empty."""
    x, y = clean(values), clean(reference)
    if not len(x) or not len(y):
        return math.nan
    gain = float(y.mean() - x.mean()) + (reference_steps - steps) * loss_per_step
    return gain / math.sqrt(1 / len(x) + 1 / len(y))


def z_p(margin: float, sigma: float) -> float:
    """The one-sided p-value that a margin means under a fixed sigma (margin / sigma is z)."""
    return math.nan if math.isnan(margin) else float(stats.norm.sf(margin / sigma))


def _runs_for_gain(gain: float, threshold: float, sigma: float, power: float, fixed: float = 0.0) -> int | None:
    """Smallest n with P(margin >= threshold) >= power when the true gain is `gain`, the margin being
    gain / sqrt(1/n + fixed) plus noise of sd sigma (the fixed-sigma model); None if none <= MAX_RUNS."""
    if not gain > 0:
        return None
    need = threshold + float(stats.norm.ppf(power)) * sigma  # the expected margin that passes with `power`
    room = (gain / need) ** 2 - fixed  # 1/n must not exceed this
    if room <= 0:
        return None
    n = max(1, math.ceil(1 / room - 1e-12))
    return n if n <= MAX_RUNS else None


def runs_for_margin(values, target: float, threshold: float, sigma: float, power: float = POWER) -> int | None:
    """Runs in total for the fixed-sigma target rule to pass with probability `power`, if the observed
    mean were the truth (the spread is sigma by the rule). None without values or above the target."""
    x = clean(values)
    return _runs_for_gain(float(target - x.mean()), threshold, sigma, power) if len(x) else None


def runs_for_pairwise(values, steps: int, reference, reference_steps: int, loss_per_step: float, threshold: float,
                      sigma: float, power: float = POWER, each: bool = False) -> int | None:
    """Runs of the new group for the pairwise rule against `reference` (kept as is) to pass with
    probability `power`, if the observed means were the truth; with `each`, the runs of each group,
    both grown to that number (gain / sqrt(2/n) = (gain / sqrt 2) / sqrt(1/n))."""
    x, y = clean(values), clean(reference)
    if not len(x) or not len(y):
        return None
    gain = float(y.mean() - x.mean()) + (reference_steps - steps) * loss_per_step
    return _runs_for_gain(gain / math.sqrt(2), threshold, sigma, power) if each else \
        _runs_for_gain(gain, threshold, sigma, power, 1 / len(y))


def median_with_misses(reached, n: int) -> float:
    """AlgoPerf's aggregate of a first-crossing measure: the median over all n runs, a run that missed
    the target (or diverged) counting as infinite; infinite when half or more of the runs missed
    (for even n, the middle pair then holds an infinity). NaN when n = 0."""
    x = clean(reached)
    if n == 0:
        return math.nan
    return float(np.median(np.concatenate([x, np.full(n - len(x), math.inf)])))
