"""The row a run appends to the records table (records.csv): its columns, its configuration key,
and a locked append.

Appends take an exclusive lock and write each row with one write() call, so runs finishing at
once on one machine never lose or tear a row. Reading and validating the table is
`analysis.records`; the format is documented, with its version, in records/README.md.
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import hashlib
import io
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from nanogpt.errors import UserError
from nanogpt.runlog import RunLog, Training, figures, parse_training

if TYPE_CHECKING:
    from nanogpt.runspec import RunSpec

SCHEMA_VERSION = 4  # of the table and the logs (records/README.md); 3 added the machine and contention figures,
#                    4 the model's size: total and active parameters, FLOPs per token of the active path
LOG_VERSIONS = (2, 3, 4)  # logs this harness reads: a version-2 log has no machine or contention figures, one
#                           before 4 no parameter counts
ENTRY_VERSION = 2  # of submissions.jsonl and sweeps.jsonl entries
COLUMNS = [
    "run_id", "date", "track", "hardware", "optimizer", "hparams", "seed", "world_size", "device", "status",
    "steps", "tokens", "train_time_s", "final_val_loss", "target", "reached_target", "time_to_target_s",
    "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
    "code_sha256", "harness_sha256", "track_sha256", "torch_version", "schema_version", "log", "checkpoint",
    "calib_ms", "cpu_util", "cpu_pressure", "steal", "gpu_util", "gpu_other_procs", "contended",
    "params_total", "params_active", "flops_per_token",
]
STATUSES = ("ok", "diverged", "interrupted")
NUMERIC = ["seed", "world_size", "steps", "tokens", "train_time_s", "final_val_loss", "target", "time_to_target_s",
           "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
           "schema_version", "calib_ms", "cpu_util", "cpu_pressure", "steal", "gpu_util", "gpu_other_procs",
           "params_total", "params_active", "flops_per_token"]
BOOLEAN = ["reached_target", "contended"]
REQUIRED = ["run_id", "track", "optimizer", "hparams", "seed", "status", "schema_version"]
# Measurements the training lines cannot reproduce: verify checks them against the log's result section only.
MEASURED = ["opt_step_share", "peak_mem_mb", "checkpoint", "calib_ms", "cpu_util", "cpu_pressure", "steal", "gpu_util",
            "gpu_other_procs", "contended"]
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


def locked_read(path: Path) -> str:
    with open(path, newline="") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            return f.read()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_raw_rows(records_dir: str | Path) -> list[tuple[int, dict[str, str]]]:
    """Every row as written (text cells) with its line number, validated; the first bad row fails
    with a message naming its line."""
    path = table_path(records_dir)
    if not path.exists():
        return []
    reader = csv.reader(io.StringIO(locked_read(path)))
    header = next(reader, None)
    if header is None:
        return []
    if header != COLUMNS:
        raise UserError(f"{path}:1: header does not match schema version {SCHEMA_VERSION}{_old_version_hint(header, reader)}; "
                        "rebuild the table from the logs (python scripts/rebuild_records.py) or move the file aside")
    rows, seen = [], {}
    for fields in reader:
        lineno = reader.line_num
        if len(fields) != len(COLUMNS):
            raise UserError(f"{path}:{lineno}: malformed row ({len(fields)} fields, expected {len(COLUMNS)}); fix or delete that line")
        rec = dict(zip(COLUMNS, fields))
        _check_row(path, lineno, rec)
        if rec["run_id"] in seen:
            raise UserError(f"{path}:{lineno}: run {rec['run_id']} already appears on line {seen[rec['run_id']]}; delete one of them")
        seen[rec["run_id"]] = lineno
        rows.append((lineno, rec))
    return rows


def _old_version_hint(header: list[str], reader) -> str:
    if "schema_version" not in header:
        return ""
    first = next(reader, None)
    if first is None or len(first) != len(header):
        return ""
    return f" (its rows are version {first[header.index('schema_version')]})"


def _check_row(path: Path, lineno: int, rec: dict[str, str]) -> None:
    where = f"{path}:{lineno}"
    if rec["schema_version"] != str(SCHEMA_VERSION):
        raise UserError(f"{where}: schema version {rec['schema_version']!r} is unknown (this harness reads {SCHEMA_VERSION}); "
                        "rebuild the table from the logs (python scripts/rebuild_records.py)")
    for col in REQUIRED:
        if rec[col] == "":
            raise UserError(f"{where}: column {col} is empty; fix or delete that line")
    if rec["status"] not in STATUSES:
        raise UserError(f"{where}: status {rec['status']!r} is not one of {', '.join(STATUSES)}")
    for col in BOOLEAN:
        if rec[col] not in ("True", "False", ""):
            raise UserError(f"{where}: {col} {rec[col]!r} must be True or False")
    for col in NUMERIC:
        if rec[col] != "":
            try:
                float(rec[col])
            except ValueError:
                raise UserError(f"{where}: column {col} = {rec[col]!r} is not a number; fix or delete that line") from None
    try:
        if not isinstance(json.loads(rec["hparams"]), dict):
            raise ValueError
    except ValueError:
        raise UserError(f"{where}: column hparams is not a JSON object; fix or delete that line") from None


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
        # the model's size from the config (absent from logs before version 4: empty)
        "params_total": config.get("params_total"), "params_active": config.get("params_active"),
        "flops_per_token": config["flops_per_token"],
    }




def check_records_dir(records_dir: str | Path) -> None:
    """Fail before any compilation or training when the run could not be recorded cleanly: the
    folder is a file or not writable, or the table there has another schema or a bad row."""
    folder = Path(records_dir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--records-dir {records_dir} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        (folder / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--records-dir {records_dir}: cannot create it ({e.strerror}); pass a writable folder") from None
    if not os.access(folder / "logs", os.W_OK) or not os.access(folder, os.W_OK):
        raise UserError(f"--records-dir {records_dir} is not writable; pass a writable folder")
    read_raw_rows(folder)  # a bad row names its line now, not after the run


class Recording:
    """One run's log and row, the same for run.py and the tests' synthetic runs: opened before the
    timed loop (config, environment, sources), one line per step and evaluation, then the row,
    computed from the lines as written, appended to the table. Ranks other than 0 write nothing."""

    def __init__(self, spec: RunSpec, records_dir: str | Path, seed: int, environment: dict, *, flops_per_token: int,
                 diverge_at: float, params: dict[str, int] | None = None, write: bool = True):
        """`params`: the model's params_total and params_active (GPT.param_counts()), logged in the
        config next to flops_per_token (the active path's); tests' synthetic runs have no model."""
        started = datetime.datetime.now(datetime.UTC)
        self.run_id = f"{started:%Y%m%d-%H%M%S}-{spec.track.name}-{spec.optimizer.name}-s{seed}-{uuid.uuid4().hex[:6]}"
        self.records_dir = Path(records_dir)
        self.path = self.records_dir / "logs" / f"{self.run_id}.txt"
        self.environment = environment
        self.config = spec.config(run_id=self.run_id, seed=seed, date=started.isoformat(timespec="seconds"),
                                  world_size=environment["world_size"], flops_per_token=flops_per_token, diverge_at=diverge_at)
        self.config |= params or {}
        self.log = RunLog(self.path) if write else None
        if self.log:
            self.log.begin(self.config, environment, spec.sources)

    def line(self, text: str) -> None:
        if self.log:
            self.log.line(text)

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.records_dir)

    def finish(self, status: str, measured: dict) -> dict:
        """Close the log with the run's row and append that row to the table; returns the row."""
        row = build_row(self.config, self.environment, parse_training(self.log.training), status, measured, self.relative(self.path))
        self.log.finish(row)
        append_row(self.records_dir, row)
        return row
