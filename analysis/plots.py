"""Every figure (matplotlib, Agg): the leaderboards', drawn from leaderboard tables and mean curves
only, and the robustness comparisons', drawn from the tidy metrics of scripts/robustness.py.

Each function saves one PNG and returns what it drew, read back from the matplotlib objects
(bars, lines, bands), so that tests and callers can check the content and not just the file.
One colour per optimizer within a figure: `colors` / `_color`, from matplotlib's default cycle.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import stats  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(fig, path: Path, dpi: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _label(r) -> str:
    return f"{r.optimizer} · {r.config} (n={r.n})"


def _color(optimizer: str, order: list[str]) -> str:
    return COLORS[order.index(optimizer) % len(COLORS)]


def colors(names) -> dict[str, str]:
    """A colour per name (optimizer or label), in the given order: pass the same names to every
    figure of one report so that a name keeps its colour across them."""
    order = list(dict.fromkeys(names))
    return {name: _color(name, order) for name in order}


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


# ---- robustness (scripts/robustness.py) ----------------------------------------------------------

def _metric_curve(runs: pd.DataFrame, metrics: pd.DataFrame, metric: str, x: str, corruption: str | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of one metric against `x`, after averaging each run over the other keys."""
    m = metrics[(metrics["metric"] == metric) & ((metrics["corruption"] == corruption) if corruption else True)]
    per_run = m.groupby(["run_id", x])["value"].mean().reset_index().merge(runs[["run_id", "label"]], on="run_id")
    return per_run.groupby(["label", x])["value"].agg(["mean", "std"]).reset_index().fillna({"std": 0.0})


def _errorbar_curves(ax, data: pd.DataFrame, x: str, colors: dict, style: str = "-", suffix: str = "") -> None:
    for label, g in data.groupby("label"):
        ax.errorbar(g[x], g["mean"], yerr=g["std"], fmt=style, marker="o", ms=4, capsize=3, color=colors[label], label=f"{label}{suffix}")


def _drawn(path: Path, axes) -> dict:
    return {"path": path, "panels": [ax.get_title() for ax in axes.flat],
            "labels": [[t.get_text() for t in legend.get_texts()] if (legend := ax.get_legend()) else [] for ax in axes.flat]}


def robustness_comparison(path: Path, title: str, runs: pd.DataFrame, metrics: pd.DataFrame, values: pd.DataFrame, erank: str,
                          colors: dict) -> dict:
    """Four panels, mean ± std over seeds per label: effective rank and probe margins (clean and
    corrupted) per layer, loss increase per corruption severity, transfer losses as bars. `runs`
    has run_id and label, `metrics` the tidy rows of analysis.robustness.evaluate_checkpoint,
    `values` the per-run headline columns; `erank` is the erank metric drawn ("erank" or
    "erank_uncentred")."""
    from analysis.robustness import RATES, mean_std  # torch: loaded only for the robustness figures

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    layers = sorted(metrics["layer"].dropna().astype(int).unique())
    ticks = ["embed" if i == 0 else f"block {i}" for i in layers]
    ax = axes[0, 0]
    _errorbar_curves(ax, _metric_curve(runs, metrics, erank, "layer"), "layer", colors)
    ax.set(title=f"effective rank of hidden states ({'uncentred' if erank.endswith('uncentred') else 'centred'})",
           xlabel="residual stream after", ylabel="erank", xticks=layers, xticklabels=ticks)
    ax = axes[0, 1]
    _errorbar_curves(ax, _metric_curve(runs, metrics, "probe_margin_clean", "layer"), "layer", colors, "-", " clean")
    _errorbar_curves(ax, _metric_curve(runs, metrics, "probe_margin_corrupted", "layer"), "layer", colors, "--", " corrupted")
    ax.set(title="next-token linear probe: mean logit margin (val)", xlabel="residual stream after", ylabel="margin",
           xticks=layers, xticklabels=ticks)
    ax = axes[1, 0]
    _errorbar_curves(ax, _metric_curve(runs, metrics, "loss_increase", "severity"), "severity", colors)
    ax.set(title="loss increase under corruption (mean over 7 kinds)", xlabel="severity (rate: "
           + ", ".join(f"{r:g}" for r in RATES[1:]) + ")", ylabel="Δ val loss vs clean")
    ax = axes[1, 1]
    bars = mean_std(runs[["run_id", "label"]], values[["run_id", "transfer_zero_shot", "transfer_finetuned", "transfer_probe"]],
                    ["label"])
    kinds = [("transfer_zero_shot", "zero-shot"), ("transfer_finetuned", "fine-tuned (AdamW)"), ("transfer_probe", "linear probe")]
    width = 0.8 / len(bars)
    for i, (_, r) in enumerate(bars.iterrows()):
        xs = np.arange(len(kinds)) + (i - (len(bars) - 1) / 2) * width
        ax.bar(xs, [r[f"{k}_mean"] for k, _ in kinds], width, yerr=[np.nan_to_num(r[f"{k}_std"]) for k, _ in kinds], capsize=3,
               color=colors[r["label"]], label=r["label"])
    lo = min(bars[f"{k}_mean"].min() for k, _ in kinds)
    hi = max(bars[f"{k}_mean"].max() for k, _ in kinds)
    ax.set(title="transfer to the second domain (val loss)", xticks=range(len(kinds)), xticklabels=[n for _, n in kinds],
           ylabel="loss", ylim=(max(0.0, lo - 0.15 * (hi - lo + 0.1)), hi + 0.1 * (hi - lo + 0.1)))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 120))
    drawn = _drawn(path, axes)
    _save(fig, path, dpi=110)
    return drawn


def robustness_corruptions(path: Path, title: str, runs: pd.DataFrame, metrics: pd.DataFrame, colors: dict) -> dict:
    """Loss increase against severity, one panel per corruption kind and one for their mean."""
    from analysis.robustness import CORRUPTIONS, RATES  # torch: loaded only for the robustness figures

    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    for ax, kind in zip(axes.flat, [*CORRUPTIONS, None]):
        _errorbar_curves(ax, _metric_curve(runs, metrics, "loss_increase", "severity", kind), "severity", colors)
        ax.set(title=kind or "mean over kinds", xlabel="severity", ylabel="Δ val loss vs clean", xticks=range(1, len(RATES)))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 120))
    drawn = _drawn(path, axes)
    _save(fig, path, dpi=110)
    return drawn
