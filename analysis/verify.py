"""Verification: recompute every recorded figure from the logs alone and check the embedded code
against its hashes. Nothing in the table, the submissions or the sweeps is trusted on its own:

- a run: its embedded sources must match the per-file hashes of its manifest, the manifest the
  harness hash and the optimizer hash; its training lines must be possible (no gaps, a monotonic
  clock, evaluations on the track's cadence); the row recomputed from those lines must equal both
  the log's result section and the table row, cell by cell;
- a submission: its runs must be verified runs of one configuration over distinct seeds, its
  record comparison must name the record current (under its rule) when it was made, and its
  statistics and decision must come out the same when recomputed from the logs under the rule it
  states (an entry without a `rule` was decided by the legacy first-crossing rule and is
  recomputed that way);
- a sweep or step search: its runs must be verified, and its budget and winner must recompute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from analysis.records import read_entries, read_raw_rows, row_from_log, submissions_path, sweeps_path
from analysis.submissions import (
    Rule,
    check_group,
    current_record,
    decide,
    decide_legacy,
    entry_setting,
    key_values,
    legacy_current_record,
    run_facts,
    schedule_steps,
)
from analysis.sweeps import choose_winner, steps_winner
from nanogpt.errors import UserError
from nanogpt.recording import COLUMNS, LOG_VERSIONS, cell, group_id
from nanogpt.runlog import (
    ParsedLog,
    code_sha256,
    combined_sha256,
    derive_status,
    harness_files,
    manifest,
    parse_log,
    read_sources,
    sha256_text,
    training_problems,
)
from nanogpt.tracks import ROOT


@dataclass
class Report:
    """Problems per subject (a run id, a submission id, a sweep id, a file); empty list = verified."""

    results: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, subject: str, problems: list[str]) -> None:
        self.results.setdefault(subject, []).extend(problems)

    @property
    def failed(self) -> dict[str, list[str]]:
        return {s: p for s, p in self.results.items() if p}


def code_problems(parsed: ParsedLog) -> list[str]:
    """The embedded sources against the recorded hashes."""
    cfg = parsed.config
    sources = cfg.get("sources", {})
    problems = [f"embedded {title} is missing" for title in sources if title not in parsed.sections]
    problems += [f"embedded {title} does not match its recorded sha256 (edited after the run?)"
                 for title, entry in sources.items() if title in parsed.sections and sha256_text(parsed.sections[title]) != entry["sha256"]]
    missing = [f for f in cfg.get("harness_files", []) if f not in sources]
    if missing or not cfg.get("harness_files"):
        problems.append(f"harness file list is empty or names files that are not embedded ({', '.join(missing[:3])})")
    elif combined_sha256(cfg["harness_files"], sources) != cfg.get("harness_sha256"):
        problems.append("harness_sha256 does not match the embedded harness files")
    optimizer = [t for t in sources if t.startswith("optimizer ")]
    if len(optimizer) != 1:
        problems.append("the log must embed exactly one optimizer module")
    elif "code_files" in cfg:  # since format 3: the module, the project modules it imports, third-party packages
        missing = [f for f in cfg["code_files"] if f not in sources]
        if missing or cfg["code_files"][:1] != optimizer:
            problems.append(f"code file list does not start with {optimizer[0]} or names files that are not embedded "
                            f"({', '.join(missing[:3])})")
        elif code_sha256(cfg["code_files"], sources, cfg.get("packages", {})) != cfg.get("code_sha256"):
            problems.append(f"code_sha256 does not match the embedded {', '.join(cfg['code_files'])} and packages")
    elif sources[optimizer[0]]["sha256"] != cfg.get("code_sha256"):  # older logs hash the module alone
        problems.append(f"code_sha256 does not match the embedded {optimizer[0]}")
    return problems


def diff_cells(recomputed: dict, recorded: dict, what: str, columns: list[str]) -> list[str]:
    return [f"{what} {c} = {cell(recorded.get(c))!r}, the log gives {cell(recomputed[c])!r}"
            for c in columns if cell(recomputed[c]) != cell(recorded.get(c))]


def verify_run(parsed: ParsedLog, table_row: dict[str, str] | None, records_dir: Path) -> tuple[list[str], dict | None]:
    """Problems with one run, and its row recomputed from the log (None if it cannot be)."""
    if parsed.config.get("schema_version") not in LOG_VERSIONS:
        return [f"log of schema version {parsed.config.get('schema_version')!r}; this harness verifies versions "
                f"{', '.join(map(str, LOG_VERSIONS))}"], None
    problems = code_problems(parsed) + training_problems(parsed.training, parsed.config)
    try:
        row = row_from_log(parsed, records_dir)
    except (KeyError, TypeError, ValueError) as e:
        return [*problems, f"config section lacks what the row needs ({type(e).__name__}: {e})"], None
    derived = derive_status(parsed.training, parsed.config["steps"], parsed.config["diverge_at"])
    if parsed.result is not None:  # without one (a killed process) the row's status is derived from the lines
        if parsed.result.get("status") != derived:
            problems.append(f"result status {parsed.result.get('status')!r} but the training lines say {derived!r}")
        # an older log's result lacks the columns added since, and states its own version
        problems += diff_cells(row, parsed.result, "result section:", [c for c in COLUMNS if c in parsed.result and c != "schema_version"])
    if table_row is not None:
        problems += diff_cells(row, table_row, "table:", COLUMNS)
    return problems, row


def close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def diff_values(recorded, recomputed, path: str = "") -> list[str]:
    """Paths where two JSON-like values differ (floats compared to 1e-9 relative)."""
    if isinstance(recorded, dict) and isinstance(recomputed, dict):
        return [d for k in sorted(set(recorded) | set(recomputed)) for d in diff_values(recorded.get(k), recomputed.get(k), f"{path}.{k}")]
    if isinstance(recorded, list) and isinstance(recomputed, list) and len(recorded) == len(recomputed):
        return [d for i, (a, b) in enumerate(zip(recorded, recomputed)) for d in diff_values(a, b, f"{path}[{i}]")]
    return [] if close(recorded, recomputed) else [f"{path.lstrip('.')}: recorded {recorded!r}, recomputed {recomputed!r}"]


def verify_submission(entry: dict, earlier: list[dict], rows: dict[str, dict], bad_runs: set[str]) -> list[str]:
    ids = [r["run_id"] for r in entry["runs"]]
    problems = [f"run {i} is not in the table or its log is unreadable" for i in ids if i not in rows and i not in bad_runs]
    problems += [f"run {i} failed verification" for i in ids if i in bad_runs]
    if problems:
        return problems
    used = [rows[i] for i in ids]
    try:
        check_group(used)
    except UserError as e:
        return [str(e)]
    first = used[0]
    identity = {"group": group_id(first), "key": key_values(first), "track": first["track"], "hardware": first["hardware"],
                "optimizer": first["optimizer"], "target": float(first["target"])}
    problems += diff_values({k: entry.get(k) for k in identity}, identity)
    legacy = "rule" not in entry  # decided before the rules split: recomputed the way it was decided
    try:
        rule = None if legacy else Rule.of_entry(entry)
    except (KeyError, TypeError, UserError) as e:
        return [*problems, f"rule {entry.get('rule')!r} with parameters {entry.get('rule_params')!r} is not valid ({e})"]
    expected = (legacy_current_record(earlier, entry["track"], entry["hardware"], exclude=entry_setting(entry)) if legacy
                else current_record(earlier, entry["track"], entry["hardware"], rule, exclude=entry_setting(entry)))
    against = entry["record_test"]["against"]
    if (expected and expected["submission_id"]) != against:
        problems.append(f"compared with record {against!r}, but the record when it was made was "
                        f"{expected['submission_id'] if expected else None!r}")
    facts = sorted((run_facts(r) for r in used), key=lambda f: f["seed"])
    accepted = bool(entry.get("accepted_contended"))
    recomputed = (decide_legacy(facts, entry["target"], expected, entry["alpha"], entry["confidence"], accepted) if legacy
                  else decide(facts, entry["target"], schedule_steps(first["hparams"]), expected, rule, entry["confidence"], accepted))
    return problems + diff_values({k: entry.get(k) for k in recomputed}, recomputed)


def verify_sweep(entry: dict, rows: dict[str, dict], bad_runs: set[str]) -> list[str]:
    problems = []
    for t in entry["trials"]:
        for i in t["run_ids"]:
            if i in bad_runs:
                problems.append(f"run {i} failed verification")
            elif i not in rows:
                problems.append(f"run {i} is not in the table")
    if problems:
        return problems
    device_s = sum(float(rows[i]["train_time_s"]) * int(rows[i]["world_size"]) for t in entry["trials"] for i in t["run_ids"])
    budget = entry["budget"]
    if budget["trials"] != len(entry["trials"]) or budget["runs"] != sum(len(t["run_ids"]) for t in entry["trials"]):
        problems.append("budget trials/runs do not match the trials listed")
    if not math.isclose(budget["device_s"], device_s, rel_tol=1e-6, abs_tol=1e-3):
        problems.append(f"budget device_s {budget['device_s']} but the runs' logs give {device_s:.3f}")
    winner = (entry["winner"] or {}).get("group")
    if entry["kind"] == "sweep":
        expected = (choose_winner(entry["trials"], entry.get("rule")) or {}).get("group")
    else:
        steps = steps_winner(entry["trials"])
        expected = next((t["group"] for t in entry["trials"] if steps is not None and int(t["overrides"]["steps"]) == steps), None)
    if winner != expected:
        problems.append(f"winner {winner} but its trials give {expected}")
    return problems


def unfinished(log: Path) -> bool:
    """A log that a dead process left without its result section (and that is not in the table)."""
    try:
        return parse_log(log).result is None
    except UserError:
        return False  # unreadable: reported as a problem by the caller


def current_harness_sha256() -> str:
    files = harness_files(ROOT)
    return combined_sha256(files, manifest(read_sources(ROOT, files)))


def verify_records(records_dir: str | Path, only: set[str] | None = None) -> Report:
    """Verify the runs (all, or those whose run id or submission id is in `only`), then every
    submission and sweep that involves them."""
    records_dir = Path(records_dir)
    report = Report()
    table = {rec["run_id"]: rec for _, rec in read_raw_rows(records_dir)}
    submissions = read_entries(submissions_path(records_dir), ("submission",))
    sweeps = read_entries(sweeps_path(records_dir), ("sweep", "steps"))
    if only:
        named = {r["run_id"] for s in submissions if s["submission_id"] in only for r in s["runs"]}
        wanted = {i for i in only if i in table} | named
        unknown = only - set(table) - {s["submission_id"] for s in submissions} - {s["sweep_id"] for s in sweeps}
        if unknown:
            raise UserError(f"no run, submission or sweep called {sorted(unknown)[0]!r} in {records_dir}")
    else:
        wanted = set(table)
    rows, bad = {}, set()
    for run_id in sorted(wanted):
        rec = table[run_id]
        try:
            parsed = parse_log(records_dir / rec["log"])
        except UserError as e:
            report.add(run_id, [str(e)])
            bad.add(run_id)
            continue
        problems, row = verify_run(parsed, rec, records_dir)
        if row is not None and row["run_id"] != run_id:
            problems.append(f"the log {rec['log']} belongs to run {row['run_id']}")
        report.add(run_id, problems)
        if problems:
            bad.add(run_id)
        elif row is not None:
            rows[run_id] = row
    current = current_harness_sha256()
    other = sorted({rec["harness_sha256"] for i, rec in table.items() if i in wanted} - {current})
    if other:
        report.notes.append(f"{sum(table[i]['harness_sha256'] in other for i in wanted)} runs were made with a harness that differs "
                            f"from this checkout ({len(other)} other version{'s' if len(other) > 1 else ''}); their logs hold that code")
    if not only:
        indexed = {(records_dir / rec["log"]).resolve() for rec in table.values()}
        for log in sorted((records_dir / "logs").glob("*.txt")):
            if log.resolve() not in indexed:
                name = str(log.relative_to(records_dir))
                if unfinished(log):
                    report.notes.append(f"{name}: unfinished run (its process died before the result: SIGKILL, a lost "
                                        "machine); not in the table, not a result")
                else:
                    report.add(name, ["log is not in the table (python scripts/rebuild_records.py indexes it)"])
    for k, entry in enumerate(submissions):
        if only is None or entry["submission_id"] in only or {r["run_id"] for r in entry["runs"]} & wanted:
            report.add(f"submission {entry['submission_id']}", verify_submission(entry, submissions[:k], rows, bad))
    for entry in sweeps:
        if only is None or entry["sweep_id"] in only:
            report.add(f"{entry['kind']} {entry['sweep_id']}", verify_sweep(entry, rows, bad))
    return report


def rebuild_rows(records_dir: str | Path) -> tuple[list[dict], dict[str, list[str]]]:
    """Rows recomputed from every log under records_dir/logs (sorted by date, then run id), and
    the problems found on the way (a log that cannot be read is left out and reported)."""
    records_dir = Path(records_dir)
    rows, problems = [], {}
    for log in sorted((records_dir / "logs").glob("*.txt")):
        name = str(log.relative_to(records_dir))
        try:
            parsed = parse_log(log)
            found, row = verify_run(parsed, None, records_dir)
        except UserError as e:
            found, row = [str(e)], None
        if found:
            problems[name] = found
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: (r["date"], r["run_id"])), problems
