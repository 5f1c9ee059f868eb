"""Submit n runs of one configuration and let the harness decide (records/README.md has the rules).

    python scripts/submit.py --optimizer muon --seeds 0-4 [--set lr=0.03] [--steps 300]
    python scripts/submit.py --optimizer muon --seeds 0-4 --collect-only     # only runs already recorded
    python scripts/submit.py --runs RUN_ID RUN_ID ...                         # exactly these runs

    python scripts/submit.py --optimizer muon --seeds 0-4 --rule steps        # decide under the other rule
    python scripts/submit.py --optimizer muon --seeds 0-4 --launcher slurm --partition gpu   # the seeds as Slurm jobs, at once

The decision follows the track's rule (nanogpt/tracks.py: `time` for every track now), or --rule:
`time` scores the mean train time of the whole runs of the schedule and tests the final losses
(one-sided t-test, p < 0.01); `steps` scores the schedule length T and applies modded-nanogpt
track 3's fixed-sigma rule. Seeds without a completed run of the configuration are run (python run.py --quiet ...); runs
already in the table are reused. The decision and its numbers are appended to
records/submissions.jsonl, which the leaderboards read. Exit status: 0 with evidence, 1 without,
2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from analysis.launch import Launcher, Runner, add_run_arguments, ensure_runs, launch_spec, make_launcher, parse_seeds
from analysis.records import append_entry, read_entries, read_table, submissions_path
from analysis.submissions import RULES, Rule, check_group, current_record, describe, make_entry, setting
from nanogpt.errors import UserError, entry_point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run or collect n seeds of one configuration and decide whether it meets the target "
                                            "and beats the track's record.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--seeds", help="seeds to submit, e.g. 0-4 or 0,1,2 (each one independent run)")
    p.add_argument("--collect-only", action="store_true", help="never launch run.py; every seed must already be recorded")
    p.add_argument("--runs", nargs="+", metavar="RUN_ID", help="submit exactly these recorded runs (instead of --seeds)")
    p.add_argument("--accept-contended", action="store_true",
                   help="take runs timed on a busy machine as evidence (the entry and the leaderboard say so)")
    p.add_argument("--rule", choices=RULES, default=None,
                   help="decide under this rule instead of the track's own (records/README.md: The rules)")
    p.add_argument("--dry-run", action="store_true", help="print the decision without appending it to submissions.jsonl")
    return p.parse_args(argv)


def named_runs(records_dir: str, run_ids: list[str]) -> list[dict]:
    df = read_table(records_dir).set_index("run_id", drop=False)
    missing = [r for r in run_ids if r not in df.index]
    if missing:
        raise UserError(f"run {missing[0]} is not in {records_dir}/records.csv")
    return [df.loc[r].to_dict() for r in run_ids]


@entry_point("interrupted; nothing was submitted (recorded runs are reused when you rerun the command)")
def main(argv: list[str] | None = None, runner: Runner | Launcher | None = None) -> int:
    args = parse_args(argv)
    if bool(args.runs) == bool(args.seeds):
        raise UserError("give either --seeds (run or collect those seeds) or --runs (exactly these runs)")
    if args.runs:
        rows = named_runs(args.records_dir, args.runs)
    else:
        spec = launch_spec(args)
        runner = runner or make_launcher(args)
        rows = ensure_runs(spec, parse_seeds(args.seeds), args.records_dir, runner, args.collect_only).rows
    check_group(rows)
    path = submissions_path(args.records_dir)
    rule = Rule.of_track(rows[0]["track"], args.rule)
    record = current_record(read_entries(path, ("submission",)), rows[0]["track"], rows[0]["hardware"], rule, setting(rows[0]))
    entry = make_entry(rows, record, rule, accept_contended=args.accept_contended)
    if not args.dry_run:
        append_entry(path, entry)
    print(describe(entry))
    if not args.dry_run:
        print(f"recorded in {path}")
    return 0 if entry["evidence"] else 1


if __name__ == "__main__":
    sys.exit(main())
