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
import time
from pathlib import Path

import pandas as pd

from analysis import plots, stats
from analysis.records import read_entries, read_table, submissions_path
from analysis.robustness import (
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
from nanogpt.checkpoint import load_checkpoint
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import ROOT, get_track

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


DESCRIPTION = (
    "Robustness, feature quality and transfer of a track's checkpoints (runs trained with --save-checkpoint), compared at "
    "matched budget and at matched loss; writes tables and plots to --out. On tiny-cpu, the 30 checkpoints of "
    "records/robustness/tiny-cpu/ took about 2 minutes on 2 CPU cores (README); the time grows with the number of checkpoints."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--track", default="tiny-cpu", help="track whose checkpoints are evaluated")
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records table and logs")
    p.add_argument("--optimizers", help="comma-separated optimizer names; unset: all with checkpoints")
    p.add_argument("--seeds", help="comma-separated seeds; unset: all")
    p.add_argument("--all-configs", action="store_true",
                   help="also the runs of configurations never submitted, e.g. losing sweep trials (unset: submitted runs, when any)")
    p.add_argument("--budget-steps", type=int, help="schedule length of the matched-budget comparison; unset: the length most "
                   "optimizers share (the longest among ties)")
    p.add_argument("--match-loss", type=float, help="val loss level of the matched-loss comparison; unset: the lowest loss every "
                   "optimizer reaches")
    p.add_argument("--uncentred", action="store_true", help="headline erank without centring the hidden states (unset: centred)")
    p.add_argument("--out", metavar="DIR", help="output folder; unset: out/robustness-<track>")
    p.add_argument("--transfer-data", metavar="PATH", default=str(TRANSFER_DATA), help="JSON-lines corpus of the second domain")
    p.add_argument("--val-seqs", type=int, default=d.val_seqs, help="validation windows for erank and probe evaluation")
    p.add_argument("--probe-train-seqs", type=int, default=d.probe_train_seqs, help="train windows the probes are fitted on")
    p.add_argument("--probe-iters", type=int, default=d.probe_iters, help="L-BFGS iterations per probe")
    p.add_argument("--corrupt-seqs", type=int, default=d.corrupt_seqs, help="validation windows per corruption and severity")
    p.add_argument("--ft-steps", type=int, default=d.ft_steps, help="AdamW fine-tuning steps on the transfer corpus")
    p.add_argument("--ft-batch", type=int, default=d.ft_batch, help="sequences per fine-tuning step")
    p.add_argument("--ft-lr", type=float, default=d.ft_lr, help="constant fine-tuning learning rate")
    p.add_argument("--seed", type=int, default=d.seed, help="corruption and sampling seed (the same for every checkpoint)")
    return p.parse_args(argv)


def parse_list(text: str | None, what: str, kind=str) -> list:
    try:
        return [kind(x.strip()) for x in (text or "").split(",") if x.strip()]
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

def mean_std_cell(mean: float, std: float, n: int) -> str:
    """Mean ± std over n seeds; the mean alone for one seed; the missing-number mark without a mean."""
    return stats.fmt(mean, ".3f") + ("" if n < 2 or pd.isna(std) or pd.isna(mean) else f" ± {std:.3f}")


def markdown_table(summary: pd.DataFrame) -> str:
    cols = ["optimizer", "n", "steps", *(HEADLINE[c][0] + (" ↑" if HEADLINE[c][1] == "higher" else " ↓") for c in HEADLINE)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in summary.iterrows():
        n = int(r["final_val_loss_count"])
        cells = [r["label"], str(n), str(int(r["steps"])), *(mean_std_cell(r[f"{c}_mean"], r[f"{c}_std"], n) for c in HEADLINE)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def corruption_table(runs: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """Loss increase per corruption kind (mean over severities per run, then mean ± std over seeds)."""
    inc = metrics[metrics["metric"] == "loss_increase"].groupby(["run_id", "corruption"])["value"].mean().unstack()
    agg = mean_std(runs[["run_id", "label"]], inc.reset_index(), ["label"])
    lines = ["| optimizer | " + " | ".join(CORRUPTIONS) + " |", "|" + "---|" * (len(CORRUPTIONS) + 1)]
    for _, r in agg.iterrows():
        cells = [mean_std_cell(r[f"{k}_mean"], r[f"{k}_std"], int(r[f"{k}_count"])) for k in CORRUPTIONS]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    colors = plots.colors(sorted(runs["label"].unique()))
    summaries, aggregates, md = [], [], [header]
    for name, (subset, description) in comparisons.items():
        summary = mean_std(subset[["run_id", "label", "steps"]], values, ["label", "steps"])
        summaries.append(summary.assign(comparison=name))
        aggregates.append(aggregate(subset, metrics).assign(comparison=name))
        title = f"{name.replace('_', ' ')}: {description}"
        plots.robustness_comparison(out / f"robustness_{name}.png", title, subset, metrics, values, erank, colors)
        plots.robustness_corruptions(out / f"corruption_{name}.png", title, subset, metrics, colors)
        md += [f"## {title}", "", markdown_table(summary), "", "Loss increase per corruption kind (mean over severities 1–5):", "",
               corruption_table(subset, metrics), "", f"![{name}](robustness_{name}.png)",
               f"![{name} corruptions](corruption_{name}.png)", ""]
    pd.concat(summaries).to_csv(out / "summary.csv", index=False)
    pd.concat(aggregates).to_csv(out / "aggregate.csv", index=False)
    (out / "summary.md").write_text("\n".join(md))


@entry_point(interrupted="interrupted: the results are written only once every checkpoint is evaluated; rerun to evaluate them")
def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


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
