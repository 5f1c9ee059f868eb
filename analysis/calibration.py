"""The steps rule's constants, measured on a track's own records.

Track 3's rule judges a submission with a fixed sigma (0.0013) and trades steps against loss at
0.0045 per 100 steps: values of GPT-2 124M on FineWeb after thousands of steps. A CPU track's
final losses scatter more across seeds, and at a few hundred steps one more step is worth far
more loss, so the rule needs the track's own values:

- sigma: the spread of the final loss across seeds, pooled over every configuration of the track
  with two or more finished runs (each weighted by its degrees of freedom, n - 1);
- threshold: sigma times the normal quantile of track 3's confidence (p < 0.001: 3.09 sigma);
- loss per step: how much lower a schedule one step longer ends, near the step count a search
  admitted: the least-squares slope of a step search's mean final losses against T over its probes
  within a factor 1.25 of the admitted T, the median over the optimizers (their latest search each).

These are track data (nanogpt/tracks.py); they judge runs without being part of any run's
identity (nanogpt.config.JUDGING_FIELDS), so setting them orphans nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from nanogpt.recording import KEY_COLUMNS

STEPS_RULE_P = 0.001  # track 3's confidence: 0.0013 * 3.09 = 0.004
NEAR = 1.25  # probes within this factor of the admitted T measure the slope there


@dataclass(frozen=True)
class Spread:
    optimizer: str
    configurations: int
    df: int
    sigma: float


@dataclass(frozen=True)
class Slope:
    optimizer: str
    admitted: int
    probes: tuple[int, ...]
    loss_per_step: float


@dataclass(frozen=True)
class Calibration:
    track: str
    spreads: list[Spread]  # per optimizer
    slopes: list[Slope]  # per optimizer with an admitted T
    sigma: float
    df: int
    threshold: float
    loss_per_step: float | None


def _pooled(groups: list[pd.Series]) -> tuple[float, int]:
    df = sum(len(g) - 1 for g in groups)
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    return (math.sqrt(ss / df) if df else math.nan), df


def spreads(table: pd.DataFrame, track: str) -> tuple[list[Spread], float, int]:
    """Per optimizer and pooled over all: the seed-to-seed spread of the final loss within configurations."""
    ok = table[(table.track == track) & (table.status == "ok")]
    groups = [g.final_val_loss for _, g in ok.groupby(KEY_COLUMNS, dropna=False) if len(g) >= 2]
    per = []
    for name, rows in ok.groupby("optimizer"):
        mine = [g.final_val_loss for _, g in rows.groupby(KEY_COLUMNS, dropna=False) if len(g) >= 2]
        if mine:
            sigma, df = _pooled(mine)
            per.append(Spread(str(name), len(mine), df, sigma))
    sigma, df = _pooled(groups)
    return per, sigma, df


def slopes(searches: list[dict], track: str) -> list[Slope]:
    """Per optimizer, from its latest step search on the track that admitted a T."""
    latest: dict[str, dict] = {}
    for entry in sorted(searches, key=lambda e: e["date"]):
        if entry["kind"] == "steps" and entry["track"] == track and entry.get("winner"):
            latest[entry["optimizer"]] = entry
    out = []
    for name, entry in sorted(latest.items()):
        admitted = int(entry["winner"]["overrides"]["steps"])
        near = sorted((int(t["overrides"]["steps"]), t["mean_final_val_loss"]) for t in entry["trials"]
                      if t.get("mean_final_val_loss") is not None and admitted / NEAR <= int(t["overrides"]["steps"]) <= admitted * NEAR)
        if len(near) >= 2:
            steps, losses = zip(*near)
            out.append(Slope(name, admitted, steps, -float(np.polyfit(steps, losses, 1)[0])))
    return out


def calibrate(table: pd.DataFrame, searches: list[dict], track: str) -> Calibration:
    per, sigma, df = spreads(table, track)
    found = slopes(searches, track)
    per_step = float(np.median([s.loss_per_step for s in found])) if found else None
    return Calibration(track, per, found, sigma, df, sigma * float(sps.norm.ppf(1 - STEPS_RULE_P)), per_step)


def to_text(c: Calibration) -> str:
    lines = [f"{c.track}: the steps rule's constants from its records", "",
             f"{'optimizer':<14}{'configurations':>15}{'df':>5}{'sigma':>9}"]
    lines += [f"{s.optimizer:<14}{s.configurations:>15}{s.df:>5}{s.sigma:>9.4f}" for s in c.spreads]
    lines += ["", f"{'optimizer':<14}{'admitted T':>11}  {'probes used':<28}{'loss per 100 steps':>19}"]
    lines += [f"{s.optimizer:<14}{s.admitted:>11}  {', '.join(map(str, s.probes)):<28}{100 * s.loss_per_step:>19.4f}"
              for s in c.slopes]
    z = sps.norm.ppf(1 - STEPS_RULE_P)
    lines += ["", "for nanogpt/tracks.py:",
              f"  steps_sigma={c.sigma:.4f},  # pooled over the configurations above ({c.df} degrees of freedom)",
              f"  steps_threshold={c.threshold:.4f},  # {z:.2f} sigma: p < {STEPS_RULE_P}"]
    lines.append(f"  steps_loss_per_step={c.loss_per_step:.6f},  # median of the searches above" if c.loss_per_step is not None
                 else "  steps_loss_per_step: no step search admitted a T on this track yet (scripts/find_steps.py)")
    return "\n".join(lines)
