"""Every figure (matplotlib, Agg): the leaderboards', drawn from leaderboard tables and mean curves
only, and the robustness comparisons', drawn from the tidy metrics of scripts/robustness.py.

Each function saves one PNG and returns what it drew, read back from the matplotlib objects
(bars, lines, bands), so that tests and callers can check the content and not just the file. A
figure that would carry no information (nothing to compare, one track, only tails far above the
target) is not drawn: the function returns {"path", "skipped": why} and removes a stale PNG of
that name, and the leaderboard says why in its place.
One colour per optimizer in every figure: `optimizer_color`, fixed by the sorted list of the
shipped optimizers (optimizers/*.py), so adamw has the same colour in every plot; in line plots
`optimizer_style` adds a line style, since twenty colours cannot all be told apart in a legend.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import stats  # noqa: E402

# the ten of matplotlib's default cycle (tab10), drawn as solid lines, then ten drawn dashed: Dark2's eight and
# Set1's red and blue (each set's colours far apart; a dashed colour may come near a solid one): twenty, as many
# shipped optimizers as the library baselines (issue 10) bring
COLORS = [*plt.rcParams["axes.prop_cycle"].by_key()["color"], *(plt.get_cmap("Dark2")(i) for i in range(8)),
          *(plt.get_cmap("Set1")(i) for i in (0, 1))]
EXTRA = [plt.get_cmap("tab20")(i) for i in range(1, 20, 2)]  # the light tab20 shades, for optimizers not shipped
SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "optimizers").glob("*.py") if not p.stem.startswith("_"))


def optimizer_color(name: str) -> str:
    """The colour of an optimizer in every figure: its place in the sorted list of shipped
    optimizers picks one of the default cycle; another optimizer (a module given by path) gets a
    light shade chosen by a hash of its name (stable across runs and figures)."""
    if name in SHIPPED and SHIPPED.index(name) < len(COLORS):
        return matplotlib.colors.to_hex(COLORS[SHIPPED.index(name)])
    return matplotlib.colors.to_hex(EXTRA[zlib.crc32(name.encode()) % len(EXTRA)])


# A legend of more entries than this sits beside the axes (the figure made wider), not over the lines.
LONG_LEGEND = 6
BESIDE_AXES = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small"}


def optimizer_style(name: str) -> dict:
    """Colour, line style and marker of an optimizer's line: the colours past the default cycle's
    ten may come close to its hues, so those lines, and any optimizer not shipped, are dashed with
    square markers."""
    first_ten = name in SHIPPED and SHIPPED.index(name) < 10
    return {"color": optimizer_color(name), "ls": "-" if first_ten else "--", "marker": "o" if first_ten else "s"}


def _save(fig, path: Path, dpi: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def legend_beside(ax) -> bool:
    """Whether the drawn legend lies wholly right of the axes (measured on the saved layout)."""
    return ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def outside_figure(fig, **texts) -> list[str]:
    """The names of the given text artists that reach past the figure's edges (measured on the saved
    layout): what a reader of the PNG would see cut off."""
    box = fig.bbox
    return [name for name, t in texts.items() if t.get_text() and not (
        box.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= box.x1)]


def skipped(path: Path, why: str) -> dict:
    """A figure left out because it would say nothing: no PNG (a stale one is removed), the reason."""
    Path(path).unlink(missing_ok=True)
    return {"path": path, "skipped": why}


def _label(r) -> str:
    return f"{r.optimizer} · {r.config} (n={r.n})"


def colors(names) -> dict[str, str]:
    """A colour per label: a label is an optimizer name, or "optimizer@config" when one optimizer
    has several configurations; it gets its optimizer's colour (`optimizer_color`), in shades from
    dark to light when the optimizer has several labels."""
    order = list(dict.fromkeys(names))
    by_optimizer: dict[str, list[str]] = {}
    for name in order:
        by_optimizer.setdefault(name.split("@")[0], []).append(name)
    out = {}
    for opt, labels in by_optimizer.items():
        base = np.array(matplotlib.colors.to_rgb(optimizer_color(opt)))
        for i, label in enumerate(labels):
            mix = 0.0 if len(labels) == 1 else -0.35 + 0.8 * i / (len(labels) - 1)  # <0 towards black, >0 towards white
            rgb = base * (1 + mix) if mix < 0 else base + (1 - base) * mix
            out[label] = matplotlib.colors.to_hex(np.clip(rgb, 0, 1))
    return out


def score_bars(table: pd.DataFrame, run_times: dict[str, list[float]], track: str, path: Path) -> dict:
    """The leaderboard's one number per entry, under the table's rule, for the entries that meet it
    (tiers 0 and 1), in leaderboard order. Time: mean train time of the whole runs, 95 % t-interval as
    error bar, one dot per seed. Steps: the schedule length T, labelled with the mean final loss.
    ✓/✗ marks a submission's decision. Not drawn when no entry meets the rule."""
    rule = table["rule"].iloc[0] if len(table) else "time"
    shown = table[table["tier"] < 2].reset_index(drop=True) if len(table) else table
    if shown.empty:
        return skipped(path, f"no entry meets the {rule} rule yet")
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(shown) + 1.8))
    y = np.arange(len(shown))
    colors_ = [optimizer_color(o) for o in shown["optimizer"]]
    if rule == "time":
        err = np.array([[m - lo if not math.isnan(lo) else 0 for m, lo in zip(shown["train_mean"], shown["train_lo"])],
                        [hi - m if not math.isnan(hi) else 0 for m, hi in zip(shown["train_mean"], shown["train_hi"])]])
        bars = ax.barh(y, shown["train_mean"], xerr=err, capsize=4, alpha=0.85, color=colors_)
        for yi, r in zip(y, shown.itertuples()):
            seeds = run_times.get(r.group, [])
            ax.scatter(seeds, np.full(len(seeds), yi), color="black", s=12, zorder=3)
        ax.set_xlabel("train time of the whole run (s): mean, 95% CI, seeds as dots")
    else:
        bars = ax.barh(y, shown["steps"], alpha=0.85, color=colors_)
        for b, r in zip(bars.patches, shown.itertuples()):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f"  loss {r.loss_mean:.4f}", va="center", fontsize=8)
        ax.set_xlabel("schedule length T (steps)")
        ax.set_xlim(0, 1.2 * float(shown["steps"].max()))
    marks = {True: " ✓", False: " ✗"}
    ax.set_yticks(y, [_label(r) + marks.get(r.evidence, "") for r in shown.itertuples()])
    ax.invert_yaxis()
    missing = len(table) - len(shown)
    ax.set_title(f"{track}: {'train time' if rule == 'time' else 'steps'} of the entries that meet the {rule} rule"
                 + (f"\n({missing} other entries do not meet it)" if missing else ""))
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_bars": len(bars.patches), "labels": [t.get_text() for t in ax.get_yticklabels()],
            "widths": [b.get_width() for b in bars.patches], "colors": [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars.patches]}


def loss_curves(curves: dict[str, dict], track: str, target: float, path: Path, x: str) -> dict:
    """Validation loss of each optimizer's best group against wall-clock (x='time_s') or steps
    (x='steps'): mean over seeds with the range over seeds as a band, zoomed near the target (down
    to the lowest loss, up to where every curve ends). Not drawn when no mean curve reaches the
    target: the zoom would show only tails far above it."""
    if not curves:
        return skipped(path, "no completed runs")
    if not any(np.any(c["mean"] <= target) for c in curves.values()):
        lowest = min(float(np.min(c["mean"])) for c in curves.values())
        return skipped(path, f"no mean curve reaches the target {target} (lowest {lowest:.4f}): only tails far above it")
    outside = len(curves) > LONG_LEGEND
    fig, ax = plt.subplots(figsize=(10.5 if outside else 8, 5))
    lines = []
    low = min(min(float(np.min(c["lo"])), target) for c in curves.values())
    finals = max(float(c["hi"][-1]) for c in curves.values())
    high = max(target + 2.5 * max(target - low, 0.02 * target), finals + 0.1 * (finals - low))  # every curve's end in view
    for name, c in curves.items():
        (line,) = ax.plot(c[x], c["mean"], label=f"{name} (n={c['n']})", **optimizer_style(name), lw=1.8, ms=3)
        ax.fill_between(c[x], c["lo"], c["hi"], color=line.get_color(), alpha=0.2, lw=0)
        lines.append(line)
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target}")
    pad = 0.05 * (high - low)
    ax.set_ylim(low - pad, high)
    inside = [c[x][np.argmax(c["mean"] <= high)] for c in curves.values() if np.any(c["mean"] <= high)]
    if inside:
        ax.set_xlim(left=0.9 * min(inside))
    ax.legend(**(BESIDE_AXES if outside else {}))
    ax.set_xlabel("train time (s)" if x == "time_s" else "step")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{track}: validation loss, best group per optimizer\n(mean; band = range over seeds)")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_curves": len(lines), "labels": [ln.get_label() for ln in lines], "n_bands": len(ax.collections),
            "ylim": ax.get_ylim(), "colors": [matplotlib.colors.to_hex(ln.get_color()) for ln in lines],
            "styles": [ln.get_linestyle() for ln in lines], "legend_beside": legend_beside(ax)}


def speedup_bars(table: pd.DataFrame, run_times: dict[str, list[float]], track: str, path: Path, baseline: str = "adamw") -> dict:
    """Speedup of each entry that meets the rule over the baseline optimizer's best such entry:
    ratio of mean train times with a 95 % bootstrap interval (time), or of schedule lengths (steps).
    Not drawn when there is nothing to compare (no baseline entry, or no other entry beside it)."""
    col = f"speedup_{baseline}"
    shown = table[table[col].notna()].reset_index(drop=True) if len(table) else table
    if shown.empty:
        return skipped(path, f"no {baseline} entry meets the rule on this track: nothing to compare with")
    if (shown["group"] == shown[f"baseline_{baseline}"]).all():
        return skipped(path, f"only {baseline} itself meets the rule: nothing to compare")
    rule = table["rule"].iloc[0]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(shown) + 1.8))
    points, lows, highs = [], [], []
    for r in shown.itertuples():
        if rule == "time":
            point, lo, hi = stats.ratio_interval(run_times[getattr(r, f"baseline_{baseline}")], run_times[r.group])
        else:
            point, lo, hi = getattr(r, col), math.nan, math.nan
        points.append(point)
        lows.append(0 if math.isnan(lo) else point - lo)
        highs.append(0 if math.isnan(hi) else hi - point)
    y = np.arange(len(shown))
    bars = ax.barh(y, points, xerr=[lows, highs], capsize=4, alpha=0.85, color=[optimizer_color(o) for o in shown["optimizer"]])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y, [_label(r) for r in shown.itertuples()])
    ax.invert_yaxis()
    what = "mean train time" if rule == "time" else "steps T"
    ax.set_xlabel(f"speedup over {baseline} (its {what} / this entry's)")
    ax.set_title(f"{track}: speedup over {baseline}" + (", 95% bootstrap CI" if rule == "time" else " in steps"))
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return {"path": path, "n_bars": len(bars.patches), "widths": [b.get_width() for b in bars.patches]}


def speedup_matched_loss(result: dict, track: str, path: Path) -> dict:
    """The FPO comparison (analysis/speedup.py): left, AdamW's final loss against its token budget
    (runs as dots, the curve read from them) with each optimizer's best entry at its own budget and
    an arrow to the budget AdamW needs for the same loss; right, one point per optimizer (its
    colour) with its 95 % bootstrap band, a line at 1x, a bound drawn as a triangle pointing the way
    it is open. Not drawn without an AdamW curve (fewer than two AdamW budgets) or without another
    optimizer to compare."""
    rows = result["rows"]
    if rows.empty or (rows["optimizer"] == "adamw").all():
        why = "; ".join(result["skipped"].values()) or "no optimizer besides adamw to compare"
        return skipped(path, why)
    rows = rows.sort_values("speedup", ascending=False).reset_index(drop=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 3.2), gridspec_kw={"width_ratios": [1.1, 1]})
    for hardware, c in result["curves"].items():
        for d, x in zip(c.tokens, c.losses):
            left.scatter(np.full(len(x), d), x, color=optimizer_color("adamw"), s=14, alpha=0.6)
        grid = np.geomspace(c.tokens[0], c.tokens[-1], 100)
        left.plot(grid, c.loss_at(grid), color=optimizer_color("adamw"), lw=1.8, label=f"adamw on {hardware}: {c.method}")
    for r in rows.itertuples():
        color = optimizer_color(r.optimizer)
        left.scatter([r.tokens], [r.loss_mean], color=color, s=40, zorder=3, edgecolor="black", lw=0.5)
        left.annotate("", xy=(r.adamw_tokens, r.loss_mean), xytext=(r.tokens, r.loss_mean),
                      arrowprops={"arrowstyle": "->", "color": color, "lw": 1, "ls": "-" if r.relation == "=" else ":"})
    left.set_xscale("log")
    left.set_xlabel("token budget D (each run a full schedule)")
    left.set_ylabel("final validation loss")
    left_title = left.set_title("AdamW's loss vs budget; optimizers at theirs (→ AdamW's budget for the same loss)", fontsize=9, loc="left")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    y = np.arange(len(rows))
    colors_ = [optimizer_color(o) for o in rows["optimizer"]]
    err = np.array([[0 if math.isnan(r.lo) else r.speedup - r.lo for r in rows.itertuples()],
                    [0 if math.isnan(r.hi) else r.hi - r.speedup for r in rows.itertuples()]])
    markers = {"=": "o", ">": ">", "<": "<"}
    drawn = [right.errorbar([r.speedup], [yi], xerr=err[:, [yi]], fmt=markers[r.relation], color=color, ms=8, capsize=4)
             for yi, r, color in zip(y, rows.itertuples(), colors_)]
    right.axvline(1.0, color="black", lw=1)
    right.set_yticks(y, [f"{r.optimizer} · {r.config} (n={r.n})" + ("" if r.relation == "=" else f" ({r.relation} bound)")
                         for r in rows.itertuples()])
    right.invert_yaxis()
    # Titles and label aligned to the outer edges: long row labels narrow both axes, and a centred
    # text wider than its axes would run past the figure's edge.
    right.set_xlabel("speedup: AdamW's tokens for the same final loss / this entry's", loc="right")
    title = right.set_title(f"{track}: speedup over AdamW at matched loss, 95% bootstrap band", fontsize=9, loc="right")
    right.grid(axis="x", alpha=0.3)
    _save(fig, path)
    bands = [tuple(c.lines[2][0].get_segments()[0][:, 0]) if c.lines[2] and np.ptp(c.lines[2][0].get_segments()[0][:, 0]) > 0
             else None for c in drawn]
    return {"path": path, "labels": [t.get_text() for t in right.get_yticklabels()],
            "points": [float(c.lines[0].get_xdata()[0]) for c in drawn], "markers": [c.lines[0].get_marker() for c in drawn],
            "colors": [matplotlib.colors.to_hex(c.lines[0].get_color()) for c in drawn], "bands": bands,
            "n_arrows": len(left.texts),
            "cut_off": outside_figure(fig, title=title, xlabel=right.xaxis.label, left_title=left_title)}


def performance_profile(best_scores: dict[str, dict[str, float]], path: Path) -> dict:
    """Dolan-Moré performance profile across tracks: for each optimizer, the fraction of tracks on
    which its best score (under each track's rule) is within a factor tau of the best optimizer's.
    Only tracks where two or more optimizers meet the rule count (on a track with one, that one is
    best by default, not by comparison), and it is not drawn with fewer than two such tracks: over
    one track it only restates that track's ranking."""
    tracks = sorted(t for t, v in best_scores.items() if sum(math.isfinite(x) for x in v.values()) >= 2)
    if len(tracks) < 2:
        return skipped(path, f"{len(tracks)} track{'s' if len(tracks) != 1 else ''} where two or more optimizers meet the rule: "
                             "a performance profile needs at least two to say more than the table")
    optimizers = sorted({o for t in tracks for o in best_scores[t]})
    ratios = {o: [] for o in optimizers}
    for t in tracks:
        best = min(v for v in best_scores[t].values() if math.isfinite(v))
        for o in optimizers:
            v = best_scores[t].get(o, math.inf)
            ratios[o].append(v / best if math.isfinite(v) else math.inf)
    finite_r = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, 1.1 * max(finite_r, default=1.0))
    taus = np.linspace(1.0, tau_max, 400)
    outside = len(optimizers) > LONG_LEGEND
    fig, ax = plt.subplots(figsize=(9.5 if outside else 7, 4.5))
    profiles = {}
    for i, o in enumerate(optimizers):
        rho = np.array([np.mean([r <= tau for r in ratios[o]]) for tau in taus])
        ax.step(taus, rho, where="post", label=o, color=optimizer_color(o), lw=2, ls=("-", "--", ":", "-.")[i % 4])
        profiles[o] = rho
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (score / best score on the track; each track's rule)")
    ax.set_ylabel("fraction of tracks within τ")
    ax.set_title(f"performance profile over {len(tracks)} tracks")
    ax.grid(alpha=0.3)
    ax.legend(**(BESIDE_AXES if outside else {}))
    _save(fig, path)
    return {"path": path, "n_lines": len(ax.get_lines()), "ratios": ratios, "taus": taus, "profiles": profiles,
            "legend_beside": legend_beside(ax)}


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
