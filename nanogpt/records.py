"""The records table (records/records.csv) and the per-run logs (records/logs/*.txt).

The logs are the source of truth; the table is an index of them, one row per run. Appends take
an exclusive lock and write each row with one write() call, so runs finishing at once on one
machine never lose or tear a row.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path

import pandas as pd

from nanogpt.errors import UserError

SCHEMA_VERSION = 1
COLUMNS = [
    "run_id", "date", "track", "hardware", "optimizer", "hparams", "seed", "world_size", "device", "status",
    "steps", "tokens", "train_time_s", "final_val_loss", "target", "reached_target", "time_to_target_s",
    "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
    "code_sha256", "harness_sha256", "torch_version", "schema_version", "log", "checkpoint",
]
STATUSES = ("ok", "diverged", "interrupted")
NUMERIC = ["seed", "world_size", "steps", "tokens", "train_time_s", "final_val_loss", "target", "time_to_target_s",
           "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
           "schema_version"]


def table_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "records.csv"


def append_row(records_dir: str | Path, row: dict) -> None:
    """Append one run's row under an exclusive lock (header written by whoever creates the file)."""
    if set(row) != set(COLUMNS):
        raise ValueError(f"row keys differ from the schema: {sorted(set(row) ^ set(COLUMNS))}")
    path = table_path(records_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with open(path, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if f.tell() == 0 and os.fstat(f.fileno()).st_size == 0:
                writer.writerow(COLUMNS)
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_table(records_dir: str | Path) -> pd.DataFrame:
    """Read and validate the table; a malformed file fails with a message naming the line."""
    path = table_path(records_dir)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    with open(path, newline="") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            text = f.read()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    if rows[0] != COLUMNS:
        raise UserError(f"{path}:1: header does not match schema version {SCHEMA_VERSION} (expected {','.join(COLUMNS)}); "
                        "rebuild the table from the logs or move the file aside")
    for lineno, fields in enumerate(rows[1:], start=2):
        if len(fields) != len(COLUMNS):
            raise UserError(f"{path}:{lineno}: malformed row ({len(fields)} fields, expected {len(COLUMNS)}); fix or delete that line")
        rec = dict(zip(COLUMNS, fields))
        if rec["status"] not in STATUSES:
            raise UserError(f"{path}:{lineno}: status {rec['status']!r} is not one of {', '.join(STATUSES)}")
        for col in NUMERIC:
            if rec[col] != "":
                try:
                    float(rec[col])
                except ValueError:
                    raise UserError(f"{path}:{lineno}: column {col} = {rec[col]!r} is not a number; fix or delete that line") from None
        try:
            json.loads(rec["hparams"])
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: column hparams is not valid JSON; fix or delete that line") from None
        if str(rec["schema_version"]) not in ("", str(SCHEMA_VERSION)):
            raise UserError(f"{path}:{lineno}: schema version {rec['schema_version']} is unknown (this harness reads {SCHEMA_VERSION})")
    df = pd.DataFrame(rows[1:], columns=COLUMNS)
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", None))
    df["reached_target"] = df["reached_target"].map({"True": True, "False": False, "": False})
    return df


class RunLog:
    """A self-contained, append-only run log in the modded-nanogpt style; written as the run goes
    so that an interrupted run keeps everything up to the interruption."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w")

    def section(self, title: str, body: str) -> None:
        self.file.write(f"==== {title} ====\n{body.rstrip()}\n")
        self.file.flush()

    def line(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
