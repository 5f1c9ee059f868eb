"""Rebuild the records table from the logs alone.

    python scripts/rebuild_records.py [--records-dir DIR]   # rewrite records.csv (the old one kept as records.csv.bak)
    python scripts/rebuild_records.py --check               # only compare the table with its rebuild

Every log under DIR/logs is read and its row recomputed from its lines (a log cut off before its
result section, e.g. a killed process, is indexed as interrupted). Logs with problems are listed;
the exit status is 1 if there were any, or if --check finds the table differs from the logs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from analysis.records import read_raw_rows, write_table
from analysis.verify import rebuild_rows
from nanogpt.errors import UserError, entry_point
from nanogpt.recording import COLUMNS, cell, table_path
from nanogpt.tracks import ROOT


def differences(records_dir: str, rows: list[dict]) -> list[str]:
    table = {rec["run_id"]: rec for _, rec in read_raw_rows(records_dir)}
    rebuilt = {r["run_id"]: r for r in rows}
    out = [f"{i}: in the table but no log gives it" for i in sorted(set(table) - set(rebuilt))]
    out += [f"{i}: has a log but no row" for i in sorted(set(rebuilt) - set(table))]
    for i in sorted(set(table) & set(rebuilt)):
        out += [f"{i}: {c} is {table[i][c]!r} in the table, {cell(rebuilt[i][c])!r} from the log"
                for c in COLUMNS if table[i][c] != cell(rebuilt[i][c])]
    return out


@entry_point(interrupted="interrupted: records.csv is replaced in one step at the end, so it is either the old or the rebuilt table")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Rebuild records.csv from the run logs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    p.add_argument("--check", action="store_true", help="compare only; do not write")
    args = p.parse_args(argv)
    if not (Path(args.records_dir) / "logs").is_dir():
        raise UserError(f"{args.records_dir}/logs does not exist; pass the records folder with --records-dir")
    rows, problems = rebuild_rows(args.records_dir)
    for log, found in problems.items():
        print(f"{log}:")
        for problem in found:
            print(f"  - {problem}")
    if args.check:
        try:
            diff = differences(args.records_dir, rows)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for d in diff:
            print(d)
        print(f"{len(rows)} rows from the logs; the table {'differs' if diff else 'matches'}")
        return 1 if diff or problems else 0
    path, backup = table_path(args.records_dir), table_path(args.records_dir).with_suffix(".csv.bak")
    had_table = path.exists()
    if had_table:
        shutil.copyfile(path, backup)
    write_table(args.records_dir, rows)
    print(f"wrote {len(rows)} rows to {path}" + (f" (previous table kept as {backup.name})" if had_table else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
