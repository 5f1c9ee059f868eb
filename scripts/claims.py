"""The papers' claims on our tracks, judged from the submissions only (analysis/claims.py has the
claims and how each verdict is reached).

    python scripts/claims.py                 # the table to stdout
    python scripts/claims.py --readme        # + rewrite README.md between the claims markers

Reads records/submissions.jsonl (or --records-dir); takes seconds, runs nothing. A claim without a
submission of both sides on a track reads "not measured" there: the claims campaign submits them
(scripts/sweep.py with the same budget per optimizer, then scripts/submit.py with n >= 3 seeds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.claims import evaluate_all, to_markdown
from analysis.leaderboard import load_records, replace_readme_section
from nanogpt.errors import entry_point
from nanogpt.tracks import ROOT


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The optimizer papers' claims tested on our tracks, from the submissions "
                                            "(reads the records, runs nothing: seconds).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    p.add_argument("--readme", metavar="PATH", nargs="?", const=str(ROOT / "README.md"), type=Path,
                   help=f"rewrite the claims section of this README (the flag alone: {ROOT / 'README.md'})")
    args = p.parse_args(argv)
    text = to_markdown(evaluate_all(load_records(args.records_dir).submissions))
    print(text)
    if args.readme is not None:
        replace_readme_section(args.readme, text, "claims")
        print(f"updated the claims section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
