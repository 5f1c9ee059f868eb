"""Reading the records table (records/records.csv) and its JSON-lines companions (submissions,
sweeps), and recomputing a run's row from its log.

The logs are the source of truth; the table is an index of them, one row per run, and can be
rebuilt from them (scripts/rebuild_records.py). Reading validates every row and names the line of
the first bad one. What a run writes (the columns, the locked append) is `nanogpt.recording`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from nanogpt.errors import UserError
from nanogpt.recording import (
    COLUMNS,
    ENTRY_VERSION,
    LOG_VERSIONS,
    NUMERIC,
    build_row,
    cell,
    csv_line,
    locked_append,
    locked_read,
    read_raw_rows,
    table_path,
)
from nanogpt.runlog import ParsedLog


def submissions_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "submissions.jsonl"


def sweeps_path(records_dir: str | Path) -> Path:
    return Path(records_dir) / "sweeps.jsonl"


def write_table(records_dir: str | Path, rows: list[dict]) -> Path:
    """Replace the table atomically with `rows` (used by the rebuild)."""
    path = table_path(records_dir)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(csv_line(COLUMNS) + "".join(csv_line([cell(r[c]) for c in COLUMNS]) for r in rows))
    os.replace(tmp, path)
    return path


def read_table(records_dir: str | Path) -> pd.DataFrame:
    """The validated table as a DataFrame (numbers parsed, reached_target as bool)."""
    raw = read_raw_rows(records_dir)
    df = pd.DataFrame([rec for _, rec in raw], columns=COLUMNS)
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col].replace("", None)) if len(df) else df[col]
    df["reached_target"] = df["reached_target"].map({"True": True, "False": False, "": False}).astype(bool)
    df["contended"] = df["contended"].map({"True": True, "False": False, "": None})  # None: measured before version 3
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
        if entry.get("schema_version") != ENTRY_VERSION:
            raise UserError(f"{path}:{lineno}: schema version {entry.get('schema_version')!r} is unknown "
                            f"(this harness reads {ENTRY_VERSION})")
        entries.append(entry)
    return entries


def row_from_log(parsed: ParsedLog, records_dir: str | Path) -> dict:
    """Recompute a run's row from its log alone. The status and measurements come from the result
    section when there is one; a log cut off before it (a killed process) is indexed as interrupted
    unless its last step diverged."""
    version = parsed.config.get("schema_version")
    if version not in LOG_VERSIONS:
        raise UserError(f"{parsed.path}: log of schema version {version!r}; this harness reads {', '.join(map(str, LOG_VERSIONS))}")
    result = parsed.result or {}
    log = os.path.relpath(parsed.path, records_dir)
    return build_row(parsed.config, parsed.environment, parsed.training, result.get("status"), result, log)
