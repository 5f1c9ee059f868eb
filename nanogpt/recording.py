"""The row a run appends to the records table (records.csv): its columns, its configuration key,
and a locked append.

Appends take an exclusive lock and write each row with one write() call, so runs finishing at
once on one machine never lose or tear a row. Reading and validating the table is
`analysis.records`; the format is documented, with its version, in records/README.md.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

from nanogpt.runlog import Training, figures

SCHEMA_VERSION = 2
COLUMNS = [
    "run_id", "date", "track", "hardware", "optimizer", "hparams", "seed", "world_size", "device", "status",
    "steps", "tokens", "train_time_s", "final_val_loss", "target", "reached_target", "time_to_target_s",
    "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
    "code_sha256", "harness_sha256", "track_sha256", "torch_version", "schema_version", "log", "checkpoint",
]
# Measurements the training lines cannot reproduce: verify checks them against the log's result section only.
MEASURED = ["opt_step_share", "peak_mem_mb", "checkpoint"]
# A configuration: runs that share these are repetitions of one experiment (they differ only in seed).
KEY_COLUMNS = ["track", "track_sha256", "optimizer", "code_sha256", "harness_sha256", "hparams", "world_size"]


def table_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "records.csv"


def hparams_text(hp: Mapping) -> str:
    """The canonical text of a hyperparameter dict in the table (sorted keys)."""
    return json.dumps(dict(hp), sort_keys=True)


def cell(value) -> str:
    """How a value is written into the CSV (and so how a recomputed value is compared with it)."""
    return "" if value is None else str(value)


def group_key(values: Mapping) -> tuple[str, ...]:
    """The configuration of a row, a run config or a submission entry, in canonical text form."""
    return tuple(str(int(float(values[c]))) if c == "world_size" else str(values[c]) for c in KEY_COLUMNS)


def group_id(values: Mapping) -> str:
    """A short stable name for a configuration (shown in leaderboards, stored in submissions)."""
    return hashlib.sha256(json.dumps(group_key(values)).encode()).hexdigest()[:10]


def locked_append(path: Path, text: str, header: str = "") -> None:
    """Append `text` (and `header` first if the file is new) under an exclusive lock, in one write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            new = os.fstat(f.fileno()).st_size == 0
            f.write((header if new else "") + text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def csv_line(values: list) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def append_row(records_dir: str | Path, row: dict) -> None:
    """Append one run's row under an exclusive lock (header written by whoever creates the file)."""
    if set(row) != set(COLUMNS):
        raise ValueError(f"row keys differ from the schema: {sorted(set(row) ^ set(COLUMNS))}")
    locked_append(table_path(records_dir), csv_line([cell(row[c]) for c in COLUMNS]), csv_line(COLUMNS))


def build_row(config: dict, environment: dict, training: Training, status: str | None, measured: dict, log: str) -> dict:
    """The table row of a run: identity from the config, figures from the training lines as
    logged, and the measurements (optimizer share, memory, checkpoint) the lines do not hold."""
    return {
        "run_id": config["run_id"], "date": config["date"], "track": config["track"],
        "hardware": config["track_config"]["hardware"], "optimizer": config["optimizer"],
        "hparams": hparams_text(config["hparams"]), "seed": config["seed"], "world_size": config["world_size"],
        "device": environment["device"], **figures(training, config, status),
        "code_sha256": config["code_sha256"], "harness_sha256": config["harness_sha256"],
        "track_sha256": config["track_sha256"], "torch_version": environment["torch"], "schema_version": SCHEMA_VERSION,
        "log": log, **{k: measured.get(k) for k in MEASURED},
    }


