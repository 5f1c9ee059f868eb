"""Leaderboards and plots, generated only from the records (table, submissions, sweeps) and logs.

    python scripts/leaderboard.py                          # Markdown of every track to stdout (submitted groups)
    python scripts/leaderboard.py --all                    # also configurations that were never submitted
    python scripts/leaderboard.py --out DIR                # + DIR/leaderboard.md and the plots
    python scripts/leaderboard.py --out records/plots --readme   # + rewrite README.md between the leaderboard markers
    python scripts/leaderboard.py --rule steps             # the other view of the same runs: ranked by steps

Each track is ranked by its own rule (nanogpt/tracks.py: `time`, the mean train time of whole runs
of a fixed schedule), or by --rule for every track (`steps`: the schedule length T under track 3's
fixed-sigma rule; steps do not depend on the machine). Plots per track (DIR/<track>/): the score
(train_time.png or steps.png: one bar per entry that meets the rule), loss_vs_time.png and
loss_vs_steps.png (best group per optimizer, mean and range over seeds, zoomed near the target),
speedup_adamw.png, speedup_matched_loss.png (the FPO comparison: the token budget AdamW needs to
reach each optimizer's final loss over the optimizer's, analysis/speedup.py, whose table follows
each track's leaderboard); across tracks: DIR/performance_profile.png. A figure that would carry no
information is not drawn (the Markdown says why in its place).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from analysis import plots, speedup
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
from analysis.submissions import RULES, current_submissions
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import ROOT, TRACKS

SCORE_FIGURE = {"time": "train_time", "steps": "steps"}
FIGURES = ("loss_vs_time", "loss_vs_steps", "speedup_adamw", "speedup_matched_loss")


def track_names(records: Records, wanted: list[str]) -> list[str]:
    present = list(dict.fromkeys([*records.table.get("track", []), *(e["track"] for e in records.submissions)]))
    for name in wanted:
        if name not in present and name not in TRACKS:
            raise UserError(f"unknown track {name!r}; tracks with records: {', '.join(present) or 'none'}")
    return wanted or present


def render_track(records: Records, track: str, include_unsubmitted: bool, out: Path | None,
                 rule: str | None = None) -> tuple[str, dict]:
    """The track's Markdown and (with `out`) its figures; returns the Markdown and what each figure
    drew (or why it was left out)."""
    table = leaderboard(records, track, include_unsubmitted, rule)
    target = float(table["target"].iloc[0]) if len(table) else TRACKS[track].target if track in TRACKS else None
    groups = set() if records.table.empty else set(records.table[records.table["track"] == track]["group"])
    submitted = {e["group"] for e in records.submissions if e["track"] == track}
    hidden = 0 if include_unsubmitted else len(groups - submitted)
    replaced = len(submitted - set(current_submissions(e for e in records.submissions if e["track"] == track)))
    note = f" {hidden} configurations with runs were never submitted (--all shows them)." if hidden > 0 else ""
    note += (f" {replaced} earlier submissions were replaced by a later one of the same setting (the same schedule "
             "re-timed; records/submissions.jsonl keeps them)." if replaced else "")
    markdown = to_markdown(table, track, target, note, rule)
    matched = speedup.speedups(records, track, table, rule) if len(table) else None
    if matched is not None:
        markdown += "\n" + speedup.to_markdown(matched, track)
    drawn: dict = {}
    if out is not None and len(table):
        folder = out / track
        judged = table["rule"].iloc[0]
        for other, name in SCORE_FIGURE.items():  # the other rule's score figure would be stale
            if other != judged:
                (folder / f"{name}.png").unlink(missing_ok=True)
        (folder / "time_to_target.png").unlink(missing_ok=True)  # the first-crossing bars of earlier versions
        times = run_times(records, table)
        best = best_per_optimizer(table)
        curves = {r.optimizer: c for r in best.itertuples() if (c := curve(records, r.run_ids)) is not None}
        name = SCORE_FIGURE[judged]
        drawn[name] = plots.score_bars(table, times, track, folder / f"{name}.png")
        drawn["loss_vs_time"] = plots.loss_curves(curves, track, target, folder / "loss_vs_time.png", "time_s")
        drawn["loss_vs_steps"] = plots.loss_curves(curves, track, target, folder / "loss_vs_steps.png", "steps")
        drawn["speedup_adamw"] = plots.speedup_bars(table, times, track, folder / "speedup_adamw.png")
        drawn["speedup_matched_loss"] = plots.speedup_matched_loss(matched, track, folder / "speedup_matched_loss.png")
    return markdown, drawn


def best_scores(records: Records, tracks: list[str], include_unsubmitted: bool, rule: str | None = None) -> dict[str, dict[str, float]]:
    """Per track, each optimizer's best score under the track's rule (infinite if no entry of it meets the rule)."""
    out = {}
    for track in tracks:
        table = leaderboard(records, track, include_unsubmitted, rule)
        out[track] = {r.optimizer: (r.score if r.tier < 2 else math.inf) for r in best_per_optimizer(table).itertuples()} \
            if len(table) else {}
    return out


def image(name: str, drawn: dict, readme_dir: Path, title: str) -> str:
    """A figure's Markdown: its image, or why it was left out."""
    if "skipped" in drawn:
        return f"*{title}: not drawn ({drawn['skipped']}).*"
    return f"![{title}]({os.path.relpath(drawn['path'], readme_dir)})"


def with_images(markdown: str, track: str, drawn: dict, readme_dir: Path) -> str:
    shown = [image(name, d, readme_dir, f"{track} {name}") for name, d in drawn.items() if "skipped" not in d]
    left = [image(name, d, readme_dir, f"{track} {name}") for name, d in drawn.items() if "skipped" in d]
    return markdown + ("\n" + " ".join(shown) + "\n" if shown else "") + "".join(f"\n{x}\n" for x in left)


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Per-track leaderboards and plots from the records.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    p.add_argument("--track", action="append", default=[], help="only this track (repeatable); empty: every track with records")
    p.add_argument("--all", action="store_true", help="include configurations that were never submitted")
    p.add_argument("--out", metavar="DIR", type=Path, help="write DIR/leaderboard.md and the plots into DIR; unset: print only")
    p.add_argument("--rule", choices=RULES, default=None,
                   help="rank every track by this rule instead of its own (the other view of the same runs)")
    p.add_argument("--readme", metavar="PATH", nargs="?", const=str(ROOT / "README.md"), type=Path,
                   help=f"rewrite the leaderboard section of this README (the flag alone: {ROOT / 'README.md'})")
    args = p.parse_args(argv)
    records = load_records(args.records_dir)
    tracks = track_names(records, args.track)
    sections = []
    for track in tracks:
        markdown, drawn = render_track(records, track, args.all, args.out, args.rule)
        sections.append((track, markdown, drawn))
    profile = None
    if args.out is not None and tracks:
        profile = plots.performance_profile(best_scores(records, tracks, args.all, args.rule), args.out / "performance_profile.png")
    text = "\n".join(md for _, md, _ in sections) or "No runs recorded yet.\n"
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "leaderboard.md").write_text(text)
        print(f"wrote {args.out}/leaderboard.md and the plots")
    if args.readme is not None:
        readme_dir = args.readme.resolve().parent
        body = "\n".join(with_images(md, t, d, readme_dir) for t, md, d in sections) or "No runs recorded yet.\n"
        if profile is not None:
            body += "\n" + image("performance_profile", profile, readme_dir, "performance profile") + "\n"
        replace_readme_section(args.readme, body)
        print(f"updated the leaderboard section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
