"""Speedup over AdamW at matched final loss, the way "Fantastic Pretraining Optimizers and Where to
Find Them" (Wen, Hall, Ma, Liang 2025, arXiv 2509.02046; FPO) measures it. FPO (its analysis code,
marin-community/marin experiments/optimizer_sweep/Analysis/speedup_estimation.py) fits AdamW's final
loss against its data budget, L(D) = alpha * D^(-B) + beta, per model size, through AdamW's best
loss at each of 4 budgets (1, 2, 4, 8x Chinchilla, each a full schedule tuned for that budget);
an optimizer that ends at loss L after D_opt tokens gets D_eff = ((L - beta) / alpha)^(-1/B), the
budget AdamW would need to end at L, and speedup D_eff / D_opt.

What we do, and where we differ from FPO:

- AdamW's budgets are the AdamW configurations on the track and hardware class that differ only in
  `steps` (T; the code, harness, world size and every other hyperparameter equal; the track hash is
  ignored because it changes with T). Submissions, sweeps and scripts/find_steps.py probes all land
  in the table, so a find_steps search of the tuned AdamW gives these budgets for free. FPO re-tunes
  AdamW at every budget; one configuration at every T is what our records hold, and it can only make
  AdamW worse away from the T it was tuned for (speedups read against it are, if anything, high).
  When several such families exist, the one with the most budgets is used (ties: the family of the
  best-ranked AdamW entry); the table says which.
- With at least FIT_BUDGETS (4, FPO's number) budgets we fit what FPO fits, L(D) = beta + alpha *
  D^(-b), by least squares on every run's final loss (FPO has one loss per budget; with seeds this
  is the fit to the means weighted by runs), constrained to a decreasing curve (alpha >= 0, b > 0,
  beta at most the lowest mean loss; FPO's fit is unconstrained). Three parameters need a fourth
  budget to leave a residual. With 2 or 3 budgets we interpolate the mean losses linearly in log D, made non-increasing first
  (pool-adjacent-violators, weighted by runs); with fewer than 2 there is no curve and the
  comparison is skipped with the reason.
- We never extrapolate: FPO reads its fitted law beyond AdamW's largest budget (and below its
  smallest); we do not. An optimizer whose loss is below AdamW's curve at its largest budget D_max
  gets the lower bound "> D_max / D_opt"; one whose loss is above AdamW's curve at its smallest
  budget D_min gets the upper bound "< D_min / D_opt".
- Each optimizer's entry is its best configuration as the leaderboard ranks it under the track's
  rule (one entry per optimizer and hardware class, like every other figure), not every
  configuration: the comparison people look for is the optimizer at its best. AdamW's own best entry
  is shown too: its speedup is 1 by construction with interpolation, and with the fit it shows the
  fit's error at that budget.
- Band: a 95 % percentile bootstrap. Each resample draws, with replacement, the optimizer's runs and
  each AdamW budget's runs (independently), recomputes the means (and the fit), and reads the
  speedup, clipped to AdamW's range [D_min, D_max] / D_opt; an end of the band at the clip is open
  (shown "≥" / "≤"). A bound or an entry with fewer than two runs (at each side) has no band.
  FPO reports single runs without bands.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from analysis import stats
from analysis.leaderboard import Records, leaderboard

BASELINE = "adamw"
FIT_BUDGETS = 4  # the power law has three parameters: a fourth budget leaves a residual
MIN_BUDGETS = 2  # fewer: no curve to read a budget from
RESAMPLES = 1000
PERCENTILES = (2.5, 97.5)


@dataclass
class Curve:
    """AdamW's final loss against its token budget: per budget (ascending), the final losses of its
    completed runs; `params` (beta, alpha, b) of the power law when it was fitted, D in tokens."""

    tokens: np.ndarray
    losses: list[np.ndarray]
    config: str
    params: tuple[float, float, float] | None = None

    @property
    def method(self) -> str:
        return "power-law fit" if self.params is not None else "interpolation in log tokens"

    def resampled(self, rng: np.random.Generator) -> Curve:
        """The curve from a bootstrap resample of each budget's runs (refitted when fitted; a
        resample whose fit fails keeps the original fit)."""
        losses = [rng.choice(x, len(x)) for x in self.losses]
        params = None if self.params is None else fit_power_law(self.tokens, losses, self.params) or self.params
        return Curve(self.tokens, losses, self.config, params)

    def loss_at(self, d: np.ndarray) -> np.ndarray:
        """AdamW's final loss at budget(s) d inside [D_min, D_max]."""
        if self.params is not None:
            beta, alpha, b = self.params
            return beta + alpha * (np.asarray(d, float) / self.tokens[-1]) ** -b
        return np.interp(np.log(d), np.log(self.tokens), non_increasing(self.means(), [len(x) for x in self.losses]))

    def means(self) -> np.ndarray:
        return np.array([x.mean() for x in self.losses])

    def tokens_for(self, loss: float) -> tuple[float, str]:
        """(D, relation): the budget AdamW needs to end at `loss`, relation "="; outside AdamW's
        range, the largest budget with ">" (AdamW needs more than it) or the smallest with "<"."""
        lo, hi = self.loss_at(self.tokens[-1]), self.loss_at(self.tokens[0])
        if loss < lo:
            return float(self.tokens[-1]), ">"
        if loss > hi:
            return float(self.tokens[0]), "<"
        if self.params is not None:
            beta, alpha, b = self.params
            return float(self.tokens[-1] * (alpha / (loss - beta)) ** (1 / b)), "="
        y = non_increasing(self.means(), [len(x) for x in self.losses])
        i = int(np.searchsorted(-y, -loss, side="left"))  # first budget whose loss is <= loss
        if i == 0:
            return float(self.tokens[i]), "="
        f = (y[i - 1] - loss) / (y[i - 1] - y[i])
        return float(math.exp(math.log(self.tokens[i - 1]) + f * math.log(self.tokens[i] / self.tokens[i - 1]))), "="


def non_increasing(y, w) -> np.ndarray:
    """The weighted least-squares non-increasing sequence closest to `y` (pool adjacent violators):
    AdamW with more tokens never ends worse, so noise that says otherwise is averaged away."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, wt in zip(y, w):
        blocks.append([float(v), float(wt), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m1, w1, c1), (m2, w2, c2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(c, m) for m, _, c in blocks])


def fit_power_law(tokens: np.ndarray, losses: list[np.ndarray], start: tuple[float, float, float] | None = None
                  ) -> tuple[float, float, float] | None:
    """FPO's L(D) = beta + alpha * (D / D_max)^(-b), least squares over every run, from `start` (a
    bootstrap resample starts from the full data's fit); None when it does not converge (the
    caller then interpolates)."""
    x = np.concatenate([np.full(len(v), d / tokens[-1]) for d, v in zip(tokens, losses)])
    y = np.concatenate(losses)
    floor = float(min(v.mean() for v in losses))
    span = max(float(y.max() - y.min()), 1e-6)
    try:
        p, _ = optimize.curve_fit(lambda d, beta, alpha, b: beta + alpha * d ** -b, x, y,
                                  p0=(min(start[0], floor - 1e-6), start[1], start[2]) if start else (floor - span, span, 0.5),
                                  bounds=([-np.inf, 0.0, 1e-3], [floor, np.inf, 10.0]))
    except (RuntimeError, ValueError):
        return None
    return float(p[0]), float(p[1]), float(p[2])


def completed(records: Records, run_ids: list[str]) -> pd.DataFrame:
    t = records.table
    return t[t["run_id"].isin(run_ids) & (t["status"] == "ok") & np.isfinite(t["final_val_loss"])]


def family_key(records: Records, row) -> tuple:
    """What an AdamW configuration shares with itself at another T."""
    first = records.table[records.table["run_id"] == row.run_ids[0]].iloc[0]
    hp = {k: v for k, v in json.loads(row.hparams).items() if k != "steps"}
    return (row.hardware, first["code_sha256"], first["harness_sha256"], int(first["world_size"]), json.dumps(hp, sort_keys=True))


def adamw_curve(records: Records, full: pd.DataFrame, hardware: str) -> Curve | str:
    """AdamW's budget-to-loss curve on one hardware class, or why there is none."""
    rows = full[(full["optimizer"] == BASELINE) & (full["hardware"] == hardware)]
    families: dict[tuple, list] = {}
    for rank, r in zip(rows.index, rows.itertuples()):
        runs = completed(records, r.run_ids)
        if len(runs):
            families.setdefault(family_key(records, r), []).append((rank, r, runs))
    if not families:
        return f"no completed {BASELINE} run on {hardware}"
    best = min(families.values(), key=lambda f: (-len({r.steps for _, r, _ in f}), min(rank for rank, _, _ in f)))
    by_tokens: dict[float, list] = {}
    for _, r, runs in best:  # groups of the family at one T (their track hashes differ: a changed track) are pooled
        by_tokens.setdefault(float(runs["tokens"].median()), []).append((r, runs))
    if len(by_tokens) < MIN_BUDGETS:
        return (f"{BASELINE} has runs at 1 budget (T = {best[0][1].steps}) in every configuration (configurations that "
                f"differ only in T share a curve); reading its loss as a function of tokens needs at least {MIN_BUDGETS} "
                f"budgets (a fit, {FIT_BUDGETS}): record it at other T, e.g. with scripts/find_steps.py")
    tokens = np.array(sorted(by_tokens))
    losses = [np.concatenate([runs["final_val_loss"].to_numpy(float) for _, runs in by_tokens[d]]) for d in tokens]
    label = next(r.config for _, r, _ in best)
    config = ", ".join(p for p in label.split(", ") if not p.startswith("steps=")) or "default"
    return Curve(tokens, losses, config, fit_power_law(tokens, losses) if len(tokens) >= FIT_BUDGETS else None)


def speedups(records: Records, track: str, entries: pd.DataFrame, rule: str | None = None) -> dict:
    """Per optimizer (its best entry among `entries`, a leaderboard table) and hardware class, the
    speedup over AdamW at matched final loss with its band. Returns {"rows": DataFrame, "curves":
    {hardware: Curve}, "skipped": {hardware: why}}; AdamW's budgets come from every configuration
    with runs, submitted or not, or replaced by a re-timing under another harness."""
    full = leaderboard(records, track, include_unsubmitted=True, rule=rule, include_replaced=True)
    out: dict = {"rows": pd.DataFrame(), "curves": {}, "skipped": {}}
    if entries.empty:
        return out
    rows = []
    rng = np.random.default_rng(stats.BOOTSTRAP_SEED)
    for hardware in entries["hardware"].unique():
        curve = adamw_curve(records, full, hardware)
        if isinstance(curve, str):
            out["skipped"][hardware] = curve
            continue
        out["curves"][hardware] = curve
        resampled = [curve.resampled(rng) for _ in range(RESAMPLES)] if min(len(x) for x in curve.losses) >= 2 else []
        best = entries[entries["hardware"] == hardware].drop_duplicates("optimizer")
        for r in best.itertuples():
            runs = completed(records, r.run_ids)
            if runs.empty:
                continue
            losses, d_opt = runs["final_val_loss"].to_numpy(float), float(runs["tokens"].median())
            d_adamw, relation = curve.tokens_for(float(losses.mean()))
            lo = hi = math.nan
            open_lo = open_hi = False
            if relation == "=" and resampled and len(losses) >= 2:
                draws = np.array([c.tokens_for(float(rng.choice(losses, len(losses)).mean()))[0] for c in resampled]) / d_opt
                lo, hi = (float(v) for v in np.percentile(draws, PERCENTILES))
                open_lo, open_hi = lo <= curve.tokens[0] / d_opt, hi >= curve.tokens[-1] / d_opt
            rows.append({"optimizer": r.optimizer, "group": r.group, "config": r.config, "hardware": hardware, "n": len(runs),
                         "steps": r.steps, "tokens": d_opt, "loss_mean": float(losses.mean()), "adamw_tokens": d_adamw,
                         "relation": relation, "speedup": d_adamw / d_opt, "lo": lo, "hi": hi, "open_lo": open_lo,
                         "open_hi": open_hi, "method": curve.method})
    out["rows"] = pd.DataFrame(rows)
    return out


def speedup_cell(r) -> str:
    point = f"{r.speedup:.2f}×"
    if r.relation != "=":
        return f"{r.relation} {point}"
    if math.isnan(r.lo):
        return point
    return f"{point} [{'≤' if r.open_lo else ''}{r.lo:.2f}, {'≥' if r.open_hi else ''}{r.hi:.2f}]"


def to_markdown(result: dict, track: str) -> str:
    """The speedup table for the README section (under the track's leaderboard), or why it is absent."""
    head = f"#### {track}: speedup over {BASELINE} at matched final loss"
    parts = [head, ""]
    for hardware, why in result["skipped"].items():
        parts.append(f"*Not computed on {hardware}: {why}.*")
    rows = result["rows"]
    if rows.empty:
        return "\n".join(parts) + "\n"
    parts += ["| optimizer | config | hardware | n | T (steps) | tokens | final val loss | AdamW needs (tokens) | speedup [95 % band] |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows.sort_values("speedup", ascending=False).itertuples():
        needs = ("" if r.relation == "=" else f"{r.relation} ") + f"{r.adamw_tokens / 1e6:.2f}M"
        parts.append(f"| {r.optimizer} | {r.config} | {r.hardware} | {r.n} | {r.steps} | {r.tokens / 1e6:.2f}M | {r.loss_mean:.4f} | "
                     f"{needs} | {speedup_cell(r)} |")
    notes = []
    for hardware, c in result["curves"].items():
        budgets = ", ".join(f"{d / 1e6:.2f}M ({len(x)} runs, {x.mean():.4f})" for d, x in zip(c.tokens, c.losses))
        fit = (f"; fit L(D) = {c.params[0]:.4f} + {c.params[1]:.4f}·(D/{c.tokens[-1] / 1e6:.2f}M)^-{c.params[2]:.3f}"
               if c.params is not None else " (the power-law fit did not converge)" if len(c.tokens) >= FIT_BUDGETS else "")
        notes.append(f"{hardware}: {BASELINE} {c.config} at {budgets}; {c.method}{fit}")
    parts += ["", "The FPO way (arXiv 2509.02046): the token budget AdamW needs to end at the optimizer's final loss (mean over "
              "seeds), divided by the optimizer's; each optimizer's best entry on the leaderboard. AdamW's curve: "
              + "; ".join(notes) + f" (a power law, FPO's, from {FIT_BUDGETS} budgets; below that, linear in log tokens). "
              "Never extrapolated: '>' a loss below AdamW's at its largest budget (a lower bound), '<' one above AdamW's at "
              "its smallest (an upper bound). Band: 95 % percentile bootstrap over the optimizer's runs and AdamW's runs at "
              f"each budget ({RESAMPLES} resamples; ≥/≤: the band reaches the edge of AdamW's budgets). analysis/speedup.py."]
    return "\n".join(parts) + "\n"
