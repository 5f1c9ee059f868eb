"""Measure the steps rule's constants (sigma, threshold, loss per step) on a track's own records.

    python scripts/calibrate_steps_rule.py                  # tiny-cpu, from records/
    python scripts/calibrate_steps_rule.py --track tiny-llama-cpu --records-dir DIR

Prints the spread of the final loss across seeds per optimizer, the loss a longer schedule saves
per step near each step search's admitted T, and the values to write into the track
(analysis/calibration.py says how each is measured). Reads the records only: seconds.
"""

from __future__ import annotations

import argparse
import sys

from analysis.calibration import calibrate, to_text
from analysis.leaderboard import load_records
from nanogpt.errors import UserError, entry_point
from nanogpt.tracks import ROOT, get_track


@entry_point()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The steps rule's constants, measured on a track's records (runs nothing).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--track", default="tiny-cpu", help="track whose records to read")
    p.add_argument("--records-dir", metavar="DIR", default=str(ROOT / "records"), help="records folder")
    args = p.parse_args(argv)
    get_track(args.track)  # an unknown name fails here, with the list of tracks
    records = load_records(args.records_dir)
    c = calibrate(records.table, records.sweeps, args.track)
    if not c.df:
        raise UserError(f"no configuration of {args.track} in {args.records_dir} has two finished runs; "
                        "record seeds first (scripts/find_steps.py or scripts/submit.py)")
    print(to_text(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
