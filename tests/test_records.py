"""The records table and the run log format: what the writer writes the parser reads back
exactly, figures come from the logged lines, and bad tables or entries fail naming the line."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
from fake_runs import record

from analysis.records import append_entry, read_entries, read_table, row_from_log
from nanogpt.errors import UserError
from nanogpt.recording import COLUMNS, ENTRY_VERSION, SCHEMA_VERSION, cell, read_raw_rows, table_path
from nanogpt.runlog import Eval, RunLog, Training, TrainStep, figures, parse_log, parse_training, training_problems
from nanogpt.runspec import resolve
from nanogpt.tracks import ROOT


def test_log_round_trip_and_row_equals_result(tmp_path):
    record(tmp_path, "muon", [0])
    (_, rec), = read_raw_rows(tmp_path)
    parsed = parse_log(tmp_path / rec["log"])
    spec = resolve("tiny-cpu", "muon", [], 60)
    for title, text in spec.sources.items():
        assert parsed.sections[title] == text  # verbatim, including the last newline
    assert parsed.config["schema_version"] == SCHEMA_VERSION
    assert parsed.training.total == 60 and [e.step for e in parsed.training.evals] == [0, 25, 50, 60]
    assert {c: cell(parsed.result[c]) for c in COLUMNS} == rec
    assert {c: cell(v) for c, v in row_from_log(parsed, tmp_path).items()} == rec


def test_sources_with_header_lines_and_no_final_newline_survive(tmp_path):
    """A source is read by its manifest length, so a line like '==== result ====' inside it
    cannot split the log, and a file without a final newline keeps its exact hash."""
    spec = resolve("tiny-cpu", "muon", [], 6)
    title = next(t for t in spec.sources if t.startswith("optimizer "))
    sources = {**spec.sources, title: 'X = 1\n==== result ====\n{"run_id": "forged"}\nY = 2'}
    config = spec.config(run_id="r", seed=0, date="2026-01-01T00:00:00+00:00", world_size=1, flops_per_token=1, diverge_at=8.0)
    config["sources"] = {t: {"sha256": "", "chars": len(s)} for t, s in sources.items()}
    log = RunLog(tmp_path / "r.txt")
    log.begin(config, {"device": "x", "torch": "y"}, sources)
    log.line("step:0/6 val_loss:5.0000 train_time:0ms step_avg:0.00ms")
    log.file.close()
    parsed = parse_log(tmp_path / "r.txt")
    assert parsed.sections[title] == sources[title]
    assert parsed.result is None and len(parsed.training.evals) == 1


def test_figures_come_from_the_logged_values():
    config = {"steps": 4, "target": 2.0, "tokens_per_step": 10, "flops_per_token": 3, "diverge_at": 8.0,
              "track_config": {"eval_every": 2}}
    lines = ["step:0/4 val_loss:5.0000 train_time:0ms step_avg:0.00ms", "step:1/4 train_loss:4.0000 train_time:100ms",
             "step:2/4 train_loss:3.0000 train_time:210ms", "step:2/4 val_loss:1.9999 train_time:210ms step_avg:105.00ms",
             "step:3/4 train_loss:2.0000 train_time:330ms", "step:4/4 train_loss:1.5000 train_time:440ms",
             "step:4/4 val_loss:1.8000 train_time:440ms step_avg:110.00ms"]
    training = parse_training(lines)
    f = figures(training, config)
    assert f["status"] == "ok" and f["final_val_loss"] == 1.8 and f["steps"] == 4 and f["train_time_s"] == 0.44
    assert (f["time_to_target_s"], f["steps_to_target"], f["tokens_to_target"], f["flops_to_target"]) == (0.21, 2, 20, 60)
    assert training_problems(training, config) == []
    assert figures(parse_training(lines[:5]), config)["status"] == "interrupted"
    diverged = parse_training([*lines[:5], "step:4/4 train_loss:nan train_time:440ms"])
    assert figures(diverged, config)["status"] == "diverged" and figures(diverged, config)["final_val_loss"] is None


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.steps.pop(1), "without gaps"),
    (lambda t: t.evals.insert(1, Eval(1, 3.0, 100, 100.0)), "cadence"),
    (lambda t: t.evals.__setitem__(1, Eval(2, 3.0, 999, 499.5)), "the step itself 210ms"),
    (lambda t: t.steps.__setitem__(2, TrainStep(3, 2.0, 50)), "decreases"),
])
def test_impossible_training_lines_are_named(edit, message):
    config = {"steps": 4, "track_config": {"eval_every": 2}}
    t = Training(4, [Eval(0, 5.0, 0, 0.0), Eval(2, 3.0, 210, 105.0), Eval(4, 1.8, 440, 110.0)],
                 [TrainStep(1, 4.0, 100), TrainStep(2, 3.0, 210), TrainStep(3, 2.0, 330), TrainStep(4, 1.5, 440)])
    assert training_problems(t, config) == []
    edit(t)
    assert any(message in p for p in training_problems(t, config))


def test_malformed_training_line_names_the_line():
    with pytest.raises(UserError, match=r"log:3: malformed training line"):
        parse_training(["step:0/4 val_loss:5.0 train_time:0ms step_avg:0.00ms", "comment", "step:1/4 train_loss:x"], "log")


def _table_with_two_rows(tmp_path: Path) -> list[str]:
    record(tmp_path, "adamw", [0, 1], steps=30)
    return table_path(tmp_path).read_text().splitlines()


@pytest.mark.parametrize("change, message", [
    (lambda f: f.__setitem__(COLUMNS.index("schema_version"), "99"), r"records.csv:3: schema version '99' is unknown"),
    (lambda f: f.__setitem__(COLUMNS.index("status"), "great"), r"records.csv:3: status 'great'"),
    (lambda f: f.__setitem__(COLUMNS.index("final_val_loss"), "low"), r"records.csv:3: column final_val_loss"),
    (lambda f: f.__setitem__(COLUMNS.index("run_id"), "RUN0"), r"records.csv:3: run RUN0 already appears on line 2"),
    (lambda f: f.pop(), r"records.csv:3: malformed row"),
])
def test_bad_row_fails_naming_its_line(tmp_path, change, message):
    header, first, second = _table_with_two_rows(tmp_path)
    first = first.replace(next(csv.reader([first]))[0], "RUN0", 1)
    fields = next(csv.reader([second]))
    change(fields)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    table_path(tmp_path).write_text("\n".join([header, first]) + "\n" + buf.getvalue())
    with pytest.raises(UserError, match=message):
        read_table(tmp_path)


def test_table_of_an_older_schema_says_so_and_how_to_fix(tmp_path):
    old = [c for c in COLUMNS if c not in ("track_sha256", "checkpoint")]  # the version 1 columns
    row = ["x"] * len(old)
    row[old.index("schema_version")] = "1"
    table_path(tmp_path).write_text(",".join(old) + "\n" + ",".join(row) + "\n")
    expected = rf"records.csv:1: header does not match schema version {SCHEMA_VERSION} \(its rows are version 1\).*rebuild"
    with pytest.raises(UserError, match=expected):
        read_table(tmp_path)


def test_read_table_types(tmp_path):
    record(tmp_path, "muon", [0, 1], steps=60)
    record(tmp_path, "muon", [2], "lr=2.0", steps=60)
    df = read_table(tmp_path)
    assert list(df["status"]) == ["ok", "ok", "diverged"]
    assert df["reached_target"].dtype == bool and df["reached_target"].tolist() == [True, True, False]
    assert df["final_val_loss"].isna().tolist() == [False, False, True]


def test_jsonl_entries_are_validated_line_by_line(tmp_path):
    path = tmp_path / "submissions.jsonl"
    append_entry(path, {"schema_version": ENTRY_VERSION, "kind": "submission", "x": 1})
    assert read_entries(path, ("submission",))[0]["x"] == 1
    with open(path, "a") as f:
        f.write('{"schema_version": 1, "kind": "submission"}\n')
    with pytest.raises(UserError, match=r"submissions.jsonl:2: schema version 1 is unknown"):
        read_entries(path, ("submission",))
    path.write_text(json.dumps({"schema_version": ENTRY_VERSION, "kind": "submission"}) + "\n{not json\n")
    with pytest.raises(UserError, match=r"submissions.jsonl:2: not valid JSON"):
        read_entries(path, ("submission",))


def test_logs_read_like_modded_nanogpt_logs_and_older_logs_stay_readable(tmp_path):
    """The code first and a line of 100 '=' after it (everything before that line is the code that
    ran), training lines `step:N/T train_loss:X train_time:Yms step_avg:Zms`; a version-2 log
    (config first, no step_avg on training lines) is still parsed."""
    record(tmp_path, "muon", [0], steps=8)
    (log,) = (tmp_path / "logs").glob("*.txt")
    text = log.read_text()
    code, _, rest = text.partition("\n" + "=" * 100 + "\n")
    assert code.startswith("==== run.py ====\n") and "\n==== optimizer muon.py ====\n" in code
    assert not re.search(r"^==== config ====$", code, re.M)
    assert rest.startswith("==== config ====\n")
    assert re.search(r"^step:3/8 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d\dms$", rest, re.M)
    parsed = parse_log(log)
    assert parsed.config["steps"] == 8 and len(parsed.training.steps) == 8 and parsed.result["status"] == "ok"
    assert parsed.sections["optimizer muon.py"] == (ROOT / "optimizers" / "muon.py").read_text()
    older = ROOT / "records" / "archive" / "before-the-rules" / "logs"
    v2 = sorted(older.glob("*.txt"))[0]
    assert v2.read_text().startswith("==== config ====\n")  # a committed log of format version 2
    assert parse_log(v2).result is not None and parse_log(v2).training.steps
