#!/usr/bin/env python
"""Beyond the loss: robustness, feature quality and transfer of each optimizer's checkpoints on one
track (the measurements of arXiv 2606.09658; definitions in analysis/robustness.py).

Checkpoints come from the records table: runs of the track with status ok that were trained with
--save-checkpoint. They are compared twice:
  matched budget  all runs of one schedule length (--budget-steps; default: the length most
                  optimizers share, the longest among ties);
  matched loss    for each optimizer, the schedule length whose mean final val loss is closest to a
                  common level (--match-loss; default: the lowest loss every optimizer reaches).
For a real matched-loss comparison, also train the faster optimizers with a shorter --steps, e.g.

    python run.py --save-checkpoint --optimizer muon --seed 0                # full schedule
    python run.py --save-checkpoint --optimizer muon --seed 0 --steps 250    # shorter, fully annealed
    python scripts/robustness.py --track tiny-cpu --optimizers muon,adamw --out out/robustness

Writes to --out: metrics.csv (every metric of every checkpoint), aggregate.csv (mean/std/count over
seeds), summary.csv and summary.md (headline table per comparison), and PNG plots.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from analysis.records import read_entries, read_table, submissions_path  # noqa: E402
from analysis.robustness import (  # noqa: E402
    CORRUPTIONS,
    RATES,
    TRANSFER_DATA,
    Settings,
    aggregate,
    evaluate_checkpoint,
    headline,
    matched_budget,
    matched_loss,
    mean_std,
    prepare_data,
    select_runs,
)
from nanogpt.checkpoint import load_checkpoint  # noqa: E402
from nanogpt.errors import UserError  # noqa: E402
from nanogpt.tracks import ROOT, get_track  # noqa: E402

HEADLINE = {  # column -> (table heading, better when)
    "final_val_loss": ("val loss", "lower"),
    "erank": ("erank (depth mean)", "higher"),
    "margin_clean": ("probe margin, clean (last layer)", "higher"),
    "margin_corrupted": ("probe margin, corrupted (last layer)", "higher"),
    "loss_increase": ("loss increase, corruption suite", "lower"),
    "transfer_zero_shot": ("transfer zero-shot loss", "lower"),
    "transfer_finetuned": ("transfer fine-tuned loss", "lower"),
    "transfer_probe": ("transfer probe loss", "lower"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description="Robustness, feature quality and transfer of a track's checkpoints.")
    p.add_argument("--track", default="tiny-cpu")
    p.add_argument("--records-dir", default=str(ROOT / "records"), help="records table and logs (default: records/)")
    p.add_argument("--optimizers", default="", help="comma-separated optimizer names (default: all with checkpoints)")
    p.add_argument("--seeds", default="", help="comma-separated seeds (default: all)")
    p.add_argument("--all-configs", action="store_true",
                   help="also the runs of configurations never submitted, e.g. losing sweep trials (default: submitted runs, when any)")
    p.add_argument("--budget-steps", type=int, default=None, help="schedule length of the matched-budget comparison")
    p.add_argument("--match-loss", type=float, default=None, help="val loss level of the matched-loss comparison")
    p.add_argument("--uncentred", action="store_true", help="headline erank without centring the hidden states (default: centred)")
    p.add_argument("--out", default=None, help="output folder (default: out/robustness-<track>)")
    p.add_argument("--transfer-data", default=str(TRANSFER_DATA), help="JSON-lines corpus of the second domain")
    p.add_argument("--val-seqs", type=int, default=d.val_seqs, help="validation windows for erank and probe evaluation")
    p.add_argument("--probe-train-seqs", type=int, default=d.probe_train_seqs, help="train windows the probes are fitted on")
    p.add_argument("--probe-iters", type=int, default=d.probe_iters, help="L-BFGS iterations per probe")
    p.add_argument("--corrupt-seqs", type=int, default=d.corrupt_seqs, help="validation windows per corruption and severity")
    p.add_argument("--ft-steps", type=int, default=d.ft_steps, help="AdamW fine-tuning steps on the transfer corpus")
    p.add_argument("--ft-batch", type=int, default=d.ft_batch, help="sequences per fine-tuning step")
    p.add_argument("--ft-lr", type=float, default=d.ft_lr, help="constant fine-tuning learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="corruption and sampling seed (the same for every checkpoint)")
    return p.parse_args(argv)


def parse_list(text: str, what: str, kind=str) -> list:
    try:
        return [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        example = "0,1,2" if kind is int else "muon,adamw"
        raise UserError(f"--{what} {text!r}: expected a comma-separated list, e.g. --{what} {example}") from None


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings(val_seqs=args.val_seqs, probe_train_seqs=args.probe_train_seqs, probe_iters=args.probe_iters,
                 corrupt_seqs=args.corrupt_seqs, ft_steps=args.ft_steps, ft_batch=args.ft_batch, ft_lr=args.ft_lr, seed=args.seed)
    for name in ("val_seqs", "probe_train_seqs", "probe_iters", "corrupt_seqs", "ft_steps", "ft_batch"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(s, name)}: must be a positive number")
    return s


# ---- tables ---------------------------------------------------------------------------------------

def fmt(mean: float, std: float, n: int) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.3f}" if n < 2 or pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def markdown_table(summary: pd.DataFrame) -> str:
    cols = ["optimizer", "n", "steps", *(HEADLINE[c][0] + (" ↑" if HEADLINE[c][1] == "higher" else " ↓") for c in HEADLINE)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        n = int(r["final_val_loss_count"])
        cells = [r["label"], str(n), str(int(r["steps"])), *(fmt(r[f"{c}_mean"], r[f"{c}_std"], n) for c in HEADLINE)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corruption_table(runs: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """Loss increase per corruption kind (mean over severities per run, then mean ± std over seeds)."""
    inc = metrics[metrics["metric"] == "loss_increase"].groupby(["run_id", "corruption"])["value"].mean().unstack()
    agg = mean_std(runs[["run_id", "label"]], inc.reset_index(), ["label"])
    lines = ["| optimizer | " + " | ".join(CORRUPTIONS) + " |", "|" + "---|" * (len(CORRUPTIONS) + 1)]
    for _, r in agg.iterrows():
        cells = [fmt(r[f"{k}_mean"], r[f"{k}_std"], int(r[f"{k}_count"])) for k in CORRUPTIONS]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- plots ----------------------------------------------------------------------------------------

def curve(runs: pd.DataFrame, metrics: pd.DataFrame, metric: str, x: str, corruption: str | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of one metric against `x`, after averaging each run over the other keys."""
    m = metrics[(metrics["metric"] == metric) & ((metrics["corruption"] == corruption) if corruption else True)]
    per_run = m.groupby(["run_id", x])["value"].mean().reset_index().merge(runs[["run_id", "label"]], on="run_id")
    return per_run.groupby(["label", x])["value"].agg(["mean", "std"]).reset_index().fillna({"std": 0.0})


def plot_curves(ax, data: pd.DataFrame, x: str, colors: dict, style: str = "-", suffix: str = "") -> None:
    for label, g in data.groupby("label"):
        ax.errorbar(g[x], g["mean"], yerr=g["std"], fmt=style, marker="o", ms=4, capsize=3, color=colors[label], label=f"{label}{suffix}")


def plot_comparison(path: Path, title: str, runs: pd.DataFrame, metrics: pd.DataFrame, values: pd.DataFrame, erank: str,
                    colors: dict) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    layers = sorted(metrics["layer"].dropna().astype(int).unique())
    ticks = ["embed" if i == 0 else f"block {i}" for i in layers]
    ax = axes[0, 0]
    plot_curves(ax, curve(runs, metrics, erank, "layer"), "layer", colors)
    ax.set(title=f"effective rank of hidden states ({'uncentred' if erank.endswith('uncentred') else 'centred'})",
           xlabel="residual stream after", ylabel="erank", xticks=layers, xticklabels=ticks)
    ax = axes[0, 1]
    plot_curves(ax, curve(runs, metrics, "probe_margin_clean", "layer"), "layer", colors, "-", " clean")
    plot_curves(ax, curve(runs, metrics, "probe_margin_corrupted", "layer"), "layer", colors, "--", " corrupted")
    ax.set(title="next-token linear probe: mean logit margin (val)", xlabel="residual stream after", ylabel="margin",
           xticks=layers, xticklabels=ticks)
    ax = axes[1, 0]
    plot_curves(ax, curve(runs, metrics, "loss_increase", "severity"), "severity", colors)
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_corruptions(path: Path, title: str, runs: pd.DataFrame, metrics: pd.DataFrame, colors: dict) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    for ax, kind in zip(axes.flat, [*CORRUPTIONS, None]):
        plot_curves(ax, curve(runs, metrics, "loss_increase", "severity", kind), "severity", colors)
        ax.set(title=kind or "mean over kinds", xlabel="severity", ylabel="Δ val loss vs clean", xticks=range(1, len(RATES)))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 120))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------------

def evaluate_runs(todo: pd.DataFrame, records_dir: Path, track_name: str, data, s: Settings) -> pd.DataFrame:
    rows = []
    for i, run in enumerate(todo.itertuples(), start=1):
        start = time.perf_counter()
        ck = load_checkpoint(records_dir / run.checkpoint)
        if ck.track != track_name:
            raise UserError(f"checkpoint {run.checkpoint} was trained on track {ck.track}, not {track_name}")
        rows += [{"run_id": run.run_id, **r} for r in evaluate_checkpoint(ck.model, data, s)]
        print(f"[{i}/{len(todo)}] {run.label} seed {run.seed}, {run.steps} steps (val loss {run.final_val_loss:.4f}): "
              f"{time.perf_counter() - start:.1f}s", flush=True)
    return pd.DataFrame(rows)


def report(out: Path, comparisons: dict, runs: pd.DataFrame, metrics: pd.DataFrame, erank: str, header: str) -> None:
    values = headline(metrics, centred=erank == "erank").merge(runs[["run_id", "final_val_loss"]], on="run_id")
    labels = sorted(runs["label"].unique())
    colors = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
    summaries, aggregates, md = [], [], [header]
    for name, (subset, description) in comparisons.items():
        summary = mean_std(subset[["run_id", "label", "steps"]], values, ["label", "steps"])
        summaries.append(summary.assign(comparison=name))
        aggregates.append(aggregate(subset, metrics).assign(comparison=name))
        title = f"{name.replace('_', ' ')}: {description}"
        plot_comparison(out / f"robustness_{name}.png", title, subset, metrics, values, erank, colors)
        plot_corruptions(out / f"corruption_{name}.png", title, subset, metrics, colors)
        md += [f"## {title}", "", markdown_table(summary), "", "Loss increase per corruption kind (mean over severities 1–5):", "",
               corruption_table(subset, metrics), "", f"![{name}](robustness_{name}.png)",
               f"![{name} corruptions](corruption_{name}.png)", ""]
    pd.concat(summaries).to_csv(out / "summary.csv", index=False)
    pd.concat(aggregates).to_csv(out / "aggregate.csv", index=False)
    (out / "summary.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    track = get_track(args.track)
    s = settings_from(args)
    records_dir = Path(args.records_dir)
    table = read_table(records_dir)
    submitted = {r["run_id"] for e in read_entries(submissions_path(records_dir), ("submission",)) for r in e["runs"]}
    if submitted and not args.all_configs:
        table = table[table["run_id"].isin(submitted)]
    runs = select_runs(table, track.name, parse_list(args.optimizers, "optimizers"), parse_list(args.seeds, "seeds", int))
    budget, steps = matched_budget(runs, args.budget_steps)
    matched, level = matched_loss(runs, args.match_loss)
    gaps = matched.groupby("label")["final_val_loss"].mean().sub(level)
    comparisons = {
        "matched_budget": (budget, f"{steps} steps"),
        "matched_loss": (matched, f"val loss closest to {level:.3f} (gap " + ", ".join(f"{k} {v:+.3f}" for k, v in gaps.items()) + ")"),
    }
    todo = runs[runs["run_id"].isin(set(budget["run_id"]) | set(matched["run_id"]))]
    print(f"track {track.name}: {len(todo)} checkpoints of {runs['label'].nunique()} optimizers to evaluate", flush=True)
    start = time.perf_counter()
    data = prepare_data(track, s, Path(args.transfer_data))
    print(f"evaluation data prepared in {time.perf_counter() - start:.1f}s", flush=True)
    metrics = evaluate_runs(todo, records_dir, track.name, data, s)

    out = Path(args.out) if args.out else ROOT / "out" / f"robustness-{track.name}"
    out.mkdir(parents=True, exist_ok=True)
    info = todo[["run_id", "label", "optimizer", "seed", "steps", "final_val_loss"]]
    info.merge(metrics, on="run_id").to_csv(out / "metrics.csv", index=False)
    erank = "erank_uncentred" if args.uncentred else "erank"
    header = "\n".join([
        f"# Beyond the loss: {track.name}", "",
        f"{len(todo)} checkpoints from {records_dir / 'records.csv'}; mean ± std over seeds (n = seeds). Evaluation seed {s.seed}; "
        f"erank {'uncentred' if args.uncentred else 'centred (hidden states minus their mean over tokens)'}; probe margins at the last "
        f"layer, corrupted = {RATES[s.margin_severity]:.0%} random token replacement; loss increase = mean over 7 corruption kinds "
        f"× 5 severities; transfer = {Path(args.transfer_data).name}, fine-tuned with AdamW lr {s.ft_lr:g} for {s.ft_steps} steps "
        f"× {s.ft_batch} sequences, probe = linear probe on frozen last-layer features.", "",
    ])
    report(out, comparisons, todo, metrics, erank, header)
    print(f"total {time.perf_counter() - start:.1f}s; wrote {out}/summary.md, summary.csv, aggregate.csv, metrics.csv and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
