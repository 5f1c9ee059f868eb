"""Reading the records table (records/records.csv) and its JSON-lines companions (submissions,
sweeps), and recomputing a run's row from its log.

The logs are the source of truth; the table is an index of them, one row per run, and can be
rebuilt from them (scripts/rebuild_records.py). Reading validates every row and names the line of
the first bad one. What a run writes (the columns, the locked append) is `nanogpt.recording`.
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
from nanogpt.recording import COLUMNS, SCHEMA_VERSION, build_row, cell, csv_line, locked_append, table_path
from nanogpt.runlog import ParsedLog

STATUSES = ("ok", "diverged", "interrupted")
NUMERIC = ["seed", "world_size", "steps", "tokens", "train_time_s", "final_val_loss", "target", "time_to_target_s",
           "steps_to_target", "tokens_to_target", "flops_to_target", "step_time_ms", "opt_step_share", "peak_mem_mb",
           "schema_version"]
REQUIRED = ["run_id", "track", "optimizer", "hparams", "seed", "status", "schema_version"]


def submissions_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "submissions.jsonl"


def sweeps_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "sweeps.jsonl"


def locked_read(path: Path) -> str:
    with open(path, newline="") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        try:
            return f.read()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_table(records_dir: str | Path, rows: list[dict]) -> Path:
    """Replace the table atomically with `rows` (used by the rebuild)."""
    path = table_path(records_dir)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(csv_line(COLUMNS) + "".join(csv_line([cell(r[c]) for c in COLUMNS]) for r in rows))
    os.replace(tmp, path)
    return path


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
    if rec["reached_target"] not in ("True", "False", ""):
        raise UserError(f"{where}: reached_target {rec['reached_target']!r} must be True or False")
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


def read_table(records_dir: str | Path) -> pd.DataFrame:
    """The validated table as a DataFrame (numbers parsed, reached_target as bool)."""
    raw = read_raw_rows(records_dir)
    df = pd.DataFrame([rec for _, rec in raw], columns=COLUMNS)
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", None)) if len(df) else df[col]
    df["reached_target"] = df["reached_target"].map({"True": True, "False": False, "": False}).astype(bool)
    return df


def append_entry(path: Path, entry: dict) -> None:
    """Append one JSON object as one line (submissions.jsonl, sweeps.jsonl), locked like the table."""
    locked_append(path, json.dumps(entry, sort_keys=True) + "\n")


def read_entries(path: Path, kinds: tuple[str, ...]) -> list[dict]:
    """Every entry of a JSON-lines file, validated; a bad line fails with a message naming it."""
    if not path.exists():
        return []
    entries = []
    for lineno, text in enumerate(locked_read(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(entry, dict) or entry.get("kind") not in kinds:
            raise UserError(f"{path}:{lineno}: not a {' or '.join(kinds)} entry; fix or delete that line")
        if entry.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"{path}:{lineno}: schema version {entry.get('schema_version')!r} is unknown "
                            f"(this harness reads {SCHEMA_VERSION})")
        entries.append(entry)
    return entries


def row_from_log(parsed: ParsedLog, records_dir: str | Path) -> dict:
    """Recompute a run's row from its log alone. The status and measurements come from the result
    section when there is one; a log cut off before it (a killed process) is indexed as interrupted
    unless its last step diverged."""
    version = parsed.config.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{parsed.path}: log of schema version {version!r}; this harness reads {SCHEMA_VERSION}")
    result = parsed.result or {}
    log = os.path.relpath(parsed.path, records_dir)
    return build_row(parsed.config, parsed.environment, parsed.training, result.get("status"), result, log)
