"""Leaderboards and plots, generated only from the records (table, submissions, sweeps) and logs.

    python scripts/leaderboard.py                          # Markdown of every track to stdout (submitted groups)
    python scripts/leaderboard.py --all                    # also configurations that were never submitted
    python scripts/leaderboard.py --out DIR                # + DIR/leaderboard.md and the plots
    python scripts/leaderboard.py --out records/plots --readme   # + rewrite README.md between the leaderboard markers

Plots per track (DIR/<track>/): time_to_target.png (bar per group, 95% CI, seeds as dots),
loss_vs_time.png and loss_vs_steps.png (best group per optimizer, mean and range over seeds,
zoomed near the target), speedup_adamw.png (bootstrap CI); across tracks:
DIR/performance_profile.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from analysis import plots
from analysis.leaderboard import (
    Records,
    best_per_optimizer,
    curve,
    leaderboard,
    load_records,
    replace_readme_section,
    run_times,
    to_markdown,
)
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import ROOT, TRACKS

FIGURES = ("time_to_target", "loss_vs_time", "loss_vs_steps", "speedup_adamw")


def track_names(records: Records, wanted: list[str]) -> list[str]:
    present = list(dict.fromkeys([*records.table.get("track", []), *(e["track"] for e in records.submissions)]))
    for name in wanted:
        if name not in present and name not in TRACKS:
            raise UserError(f"unknown track {name!r}; tracks with records: {', '.join(present) or 'none'}")
    return wanted or present


def render_track(records: Records, track: str, include_unsubmitted: bool, out: Path | None) -> tuple[str, dict]:
    """The track's Markdown and (with `out`) its figures; returns the Markdown and what each figure drew."""
    table = leaderboard(records, track, include_unsubmitted)
    target = float(table["target"].iloc[0]) if len(table) else TRACKS[track].target if track in TRACKS else None
    hidden = 0 if include_unsubmitted or records.table.empty else (
        records.table[records.table["track"] == track]["group"].nunique() - len(table))
    note = f" {hidden} configurations with runs were never submitted (--all shows them)." if hidden > 0 else ""
    markdown = to_markdown(table, track, target, note)
    drawn: dict = {}
    if out is not None and len(table):
        folder = out / track
        times = run_times(records, table)
        best = best_per_optimizer(table)
        curves = {r.optimizer: c for r in best.itertuples() if (c := curve(records, r.run_ids)) is not None}
        drawn["time_to_target"] = plots.time_bars(table, times, track, folder / "time_to_target.png")
        drawn["loss_vs_time"] = plots.loss_curves(curves, track, target, folder / "loss_vs_time.png", "time_s")
        drawn["loss_vs_steps"] = plots.loss_curves(curves, track, target, folder / "loss_vs_steps.png", "steps")
        drawn["speedup_adamw"] = plots.speedup_bars(table, times, track, folder / "speedup_adamw.png")
    return markdown, drawn


def best_times(records: Records, tracks: list[str], include_unsubmitted: bool) -> dict[str, dict[str, float]]:
    """Per track, each optimizer's best mean time to target (infinite if no group of it reached it every time)."""
    out = {}
    for track in tracks:
        table = leaderboard(records, track, include_unsubmitted)
        out[track] = {r.optimizer: (r.time_mean if r.n_reached == r.n else math.inf) for r in best_per_optimizer(table).itertuples()} \
            if len(table) else {}
    return out


def with_images(markdown: str, track: str, drawn: dict, readme_dir: Path) -> str:
    links = [f"![{track} {name}]({os.path.relpath(d['path'], readme_dir)})" for name, d in drawn.items()]
    return markdown + ("\n" + " ".join(links) + "\n" if links else "")


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Per-track leaderboards and plots from the records.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    p.add_argument("--track", action="append", default=[], help="only this track (repeatable); empty: every track with records")
    p.add_argument("--all", action="store_true", help="include configurations that were never submitted")
    p.add_argument("--out", metavar="DIR", type=Path, help="write DIR/leaderboard.md and the plots into DIR; unset: print only")
    p.add_argument("--readme", metavar="PATH", nargs="?", const=str(ROOT / "README.md"), type=Path,
                   help=f"rewrite the leaderboard section of this README (the flag alone: {ROOT / 'README.md'})")
    args = p.parse_args(argv)
    records = load_records(args.records_dir)
    tracks = track_names(records, args.track)
    sections = []
    for track in tracks:
        markdown, drawn = render_track(records, track, args.all, args.out)
        sections.append((track, markdown, drawn))
    if args.out is not None and tracks:
        plots.performance_profile(best_times(records, tracks, args.all), args.out / "performance_profile.png")
    text = "\n".join(md for _, md, _ in sections) or "No runs recorded yet.\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "leaderboard.md").write_text(text)
        print(f"wrote {args.out}/leaderboard.md and the plots")
    if args.readme is not None:
        readme_dir = args.readme.resolve().parent
        body = "\n".join(with_images(md, t, d, readme_dir) for t, md, d in sections) or "No runs recorded yet.\n"
        if args.out is not None:
            body += f"\n![performance profile]({os.path.relpath(args.out.resolve() / 'performance_profile.png', readme_dir)})\n"
        replace_readme_section(args.readme, body)
        print(f"updated the leaderboard section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
