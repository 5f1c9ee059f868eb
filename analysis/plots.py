"""Leaderboard figures (matplotlib, Agg), drawn from leaderboard tables and mean curves only.

Each function saves one PNG and returns what it drew, read back from the matplotlib objects
(bars, lines, bands), so that tests and callers can check the content and not just the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import stats  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label(r) -> str:
    return f"{r.optimizer} · {r.config} (n={r.n})"


def _color(optimizer: str, order: list[str]) -> str:
    return COLORS[order.index(optimizer) % len(COLORS)]


def time_bars(table: pd.DataFrame, run_times: dict[str, list[float]], track: str, path: Path) -> dict:
    """One bar per group that reached the target: mean time to target, 95 % t-interval as error
    bar, one dot per seed; groups are in leaderboard order, ✓/✗ marks the submission's evidence."""
    shown = table[table["n_reached"] > 0].reset_index(drop=True)
    order = list(dict.fromkeys(table["optimizer"]))
    fig, ax = plt.subplots(figsize=(8, 0.55 * max(len(shown), 1) + 1.8))
    y = np.arange(len(shown))
    err = np.array([[m - lo if not math.isnan(lo) else 0 for m, lo in zip(shown["time_mean"], shown["time_lo"])],
                    [hi - m if not math.isnan(hi) else 0 for m, hi in zip(shown["time_mean"], shown["time_hi"])]])
    bars = ax.barh(y, shown["time_mean"], xerr=err, capsize=4, alpha=0.85,
                   color=[_color(o, order) for o in shown["optimizer"]])
    for yi, r in zip(y, shown.itertuples()):
        seeds = run_times.get(r.group, [])
        ax.scatter(seeds, np.full(len(seeds), yi), color="black", s=12, zorder=3)
    marks = {True: " ✓", False: " ✗"}
    ax.set_yticks(y, [_label(r) + marks.get(r.evidence, "") for r in shown.itertuples()])
    ax.invert_yaxis()
    ax.set_xlabel("train time to target (s)")
    if shown.empty:
        ax.text(0.5, 0.5, "no group reached the target yet", ha="center", va="center", transform=ax.transAxes)
    missing = len(table) - len(shown)
    ax.set_title(f"{track}: time to target, mean and 95% CI over seeds" + (f"\n({missing} groups never reached it)" if missing else ""))
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_bars": len(bars.patches), "labels": [t.get_text() for t in ax.get_yticklabels()],
            "widths": [b.get_width() for b in bars.patches]}


def loss_curves(curves: dict[str, dict], track: str, target: float, path: Path, x: str) -> dict:
    """Validation loss of each optimizer's best group against wall-clock (x='time_s') or steps
    (x='steps'): mean over seeds with the range over seeds as a band, zoomed near the target (down
    to the lowest loss, up to where every curve ends)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    order = list(curves)
    lines = []
    low = min((min(float(np.min(c["lo"])), target) for c in curves.values()), default=target)
    finals = max((float(c["hi"][-1]) for c in curves.values()), default=target)
    high = max(target + 2.5 * max(target - low, 0.02 * target), finals + 0.1 * (finals - low))  # every curve's end in view
    for name, c in curves.items():
        (line,) = ax.plot(c[x], c["mean"], label=f"{name} (n={c['n']})", color=_color(name, order), lw=1.8, marker="o", ms=3)
        ax.fill_between(c[x], c["lo"], c["hi"], color=line.get_color(), alpha=0.2, lw=0)
        lines.append(line)
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target}")
    if curves:
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high)
        inside = [c[x][np.argmax(c["mean"] <= high)] for c in curves.values() if np.any(c["mean"] <= high)]
        if inside:
            ax.set_xlim(left=0.9 * min(inside))
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("train time (s)" if x == "time_s" else "step")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{track}: validation loss (mean, band = range over seeds), best group per optimizer")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_curves": len(lines), "labels": [ln.get_label() for ln in lines], "n_bands": len(ax.collections),
            "ylim": ax.get_ylim()}


def speedup_bars(table: pd.DataFrame, run_times: dict[str, list[float]], track: str, path: Path, baseline: str = "adamw") -> dict:
    """Speedup of each group over the baseline optimizer's best group (ratio of mean times to
    target), with a 95 % bootstrap interval of the ratio."""
    col = f"speedup_{baseline}"
    shown = table[table[col].notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.55 * max(len(shown), 1) + 1.8))
    points, lows, highs = [], [], []
    for r in shown.itertuples():
        point, lo, hi = stats.ratio_interval(run_times[getattr(r, f"baseline_{baseline}")], run_times[r.group])
        points.append(point)
        lows.append(0 if math.isnan(lo) else point - lo)
        highs.append(0 if math.isnan(hi) else hi - point)
    order = list(dict.fromkeys(table["optimizer"]))
    y = np.arange(len(shown))
    bars = ax.barh(y, points, xerr=[lows, highs], capsize=4, alpha=0.85, color=[_color(o, order) for o in shown["optimizer"]])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y, [_label(r) for r in shown.itertuples()])
    ax.invert_yaxis()
    ax.set_xlabel(f"speedup over {baseline} (its mean time to target / this group's)")
    title = f"{track}: speedup over {baseline}, 95% bootstrap CI"
    if shown.empty:
        ax.text(0.5, 0.5, f"no {baseline} group reached the target on this track", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_bars": len(bars.patches), "widths": [b.get_width() for b in bars.patches]}


def performance_profile(best_times: dict[str, dict[str, float]], path: Path) -> dict:
    """Dolan-Moré performance profile across tracks: for each optimizer, the fraction of tracks on
    which its best time to target is within a factor tau of the fastest optimizer's."""
    tracks = sorted(best_times)
    optimizers = sorted({o for t in tracks for o in best_times[t]})
    ratios = {o: [] for o in optimizers}
    for t in tracks:
        finite = [v for v in best_times[t].values() if math.isfinite(v)]
        best = min(finite) if finite else math.nan
        for o in optimizers:
            v = best_times[t].get(o, math.inf)
            ratios[o].append(v / best if math.isfinite(v) and finite else math.inf)
    finite_r = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, 1.1 * max(finite_r, default=1.0))
    taus = np.linspace(1.0, tau_max, 400)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    profiles = {}
    for i, o in enumerate(optimizers):
        rho = np.array([np.mean([r <= tau for r in ratios[o]]) for tau in taus]) if tracks else np.zeros_like(taus)
        ax.step(taus, rho, where="post", label=o, color=_color(o, optimizers), lw=2, ls=("-", "--", ":", "-.")[i % 4])
        profiles[o] = rho
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (time to target / best time on the track)")
    ax.set_ylabel("fraction of tracks within τ")
    ax.set_title(f"performance profile over {len(tracks)} track{'s' if len(tracks) != 1 else ''}")
    ax.grid(alpha=0.3)
    if optimizers:
        ax.legend()
    _save(fig, path)
    return {"path": path, "n_lines": len(ax.get_lines()), "ratios": ratios, "taus": taus, "profiles": profiles}
