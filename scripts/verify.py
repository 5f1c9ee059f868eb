"""Verify runs, submissions and sweeps from the logs alone.

    python scripts/verify.py                       # everything in records/
    python scripts/verify.py RUN_OR_SUBMISSION_ID  # one run, or one submission and its runs
    python scripts/verify.py --records-dir DIR

For every run: the embedded code must match its hashes, the training lines must be possible,
and the final loss, time/steps/tokens to target and status recomputed from them must equal the
log's result and the table row. For every submission and sweep: its statistics, decision,
budget and winner must recompute from the verified runs. Exit status 1 if anything fails.
"""

from __future__ import annotations

import argparse
import sys

from analysis.verify import verify_records
from nanogpt.errors import entry_point
from nanogpt.tracks import ROOT


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Recompute every recorded figure from the logs and check the embedded code.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("ids", nargs="*", default=[], help="run ids, submission ids or sweep ids; none given: everything")
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    args = p.parse_args(argv)
    report = verify_records(args.records_dir, set(args.ids) or None)
    for subject, problems in report.results.items():
        print(f"{'ok  ' if not problems else 'FAIL'} {subject}")
        for problem in problems:
            print(f"       - {problem}")
    for note in report.notes:
        print(f"note: {note}")
    failed = len(report.failed)
    print(f"{len(report.results) - failed} verified, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
