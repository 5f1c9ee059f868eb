"""Per-track leaderboards built only from the records (table, submissions, sweeps) and the logs;
never edited by hand.

A leaderboard row is a configuration group (same code, harness, track and hyperparameters). A
submitted group uses exactly the runs of its latest submission and shows that submission's
verdict, unless a later submission of the same setting (the same schedule re-timed, under a newer
harness or on another machine) replaced it; other groups (shown on request) use every completed
run of the configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import stats
from analysis.records import read_entries, read_table, submissions_path, sweeps_path
from analysis.submissions import (
    Rule,
    assess,
    current_record,
    current_submissions,
    first_crossing,
    run_facts,
    schedule_steps,
    score,
    setting,
)
from nanogpt.errors import UserError
from nanogpt.recording import COLUMNS, KEY_COLUMNS, NUMERIC, group_id
from nanogpt.runlog import parse_log

BASELINES = ("adamw", "muon")
# Reference machines of the normalised-time column (CPU tracks, where machines of one hardware class
# differ twofold): per track, the machine figure (calib_ms, nanogpt/contention.py) of the machine the
# column refers to. A run's normalised time = its time x reference calib_ms / its own calib_ms.
# Raw times stay the record; the column is a reading aid across machines.
REFERENCE_MACHINES: dict[str, dict] = {
    # the fastest of 7 passes after the warmup (nanogpt/contention.py): median of 7 runs alone, 232.8-280.4 ms
    # (scripts/bench_overhead.py, 2026-12-02 13:00 UTC), at 233-240 ms per Muon step
    "tiny-cpu": {"calib_ms": 242.7, "machine": "AMD EPYC 2-core VM, median of 7 runs alone (2026-12-02, torch 2.13.0+cpu)"},
}


def readme_markers(name: str = "leaderboard") -> tuple[str, str]:
    """The comments that delimit a generated README section (the leaderboard, the claims table)."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


README_START, README_END = readme_markers()


@dataclass
class Records:
    table: pd.DataFrame
    submissions: list[dict]
    sweeps: list[dict]
    directory: Path


def load_records(records_dir: str | Path) -> Records:
    table = read_table(records_dir)
    table["group"] = [group_id(r) for r in table[KEY_COLUMNS].to_dict("records")] if len(table) else []
    return Records(table, read_entries(submissions_path(records_dir), ("submission",)),
                   read_entries(sweeps_path(records_dir), ("sweep", "steps")), Path(records_dir))


def found_group(search: dict) -> str | None:
    """The configuration a search leads to: its winner; for a step search in which no schedule up
    to the budget met the target, its longest probe, the budget's whole schedule (the entry an
    optimizer that misses gets on the board, as SGD's)."""
    if search.get("winner") is not None:
        return search["winner"]["group"]
    if search["kind"] == "steps" and search["trials"]:
        return max(search["trials"], key=lambda t: int(t["overrides"]["steps"]))["group"]
    return None


def tuned_setting(values: dict) -> tuple:
    """A setting (analysis.submissions.setting) less its schedule length: what one tuning effort
    chooses, since a grid picks the hyperparameters at the track's steps and a step search from its
    winner then picks T."""
    track, hardware, optimizer, hparams, world_size = setting(values)
    hp = {k: v for k, v in json.loads(hparams).items() if k != "steps"}
    return track, hardware, optimizer, json.dumps(hp, sort_keys=True), world_size


def tuning_budgets(sweeps: list[dict], table: pd.DataFrame) -> dict[tuple, dict]:
    """Per tuned setting, the searches that led to it (found_group): their distinct trials and
    distinct runs, each counted once (a step search reuses its grid's runs; a resumed search appears
    several times under one sweep_id: only its latest entry counts), so that an entry at the T a step
    search found counts the grid that chose its hyperparameters, and an entry re-timed under a newer
    harness keeps the budget that found them."""
    if table.empty:
        return {}
    tuned = {r["group"]: tuned_setting(r) for r in table.drop_duplicates("group").to_dict("records")}
    runs = table.drop_duplicates("run_id").set_index("run_id")
    device_s = runs["train_time_s"].astype(float) * runs["world_size"].astype(int)
    latest: dict[str, dict] = {}
    for s in sweeps:
        latest[s["sweep_id"]] = s
    trials: dict[tuple, set[str]] = {}
    run_ids: dict[tuple, set[str]] = {}
    for s in latest.values():
        key = tuned.get(found_group(s))
        if key is None:
            continue
        for t in s["trials"]:
            trials.setdefault(key, set()).add(t["group"])
            run_ids.setdefault(key, set()).update(t["run_ids"])
    return {key: {"trials": len(trials[key]), "runs": len(ids), "device_s": float(device_s.reindex(sorted(ids)).sum())}
            for key, ids in run_ids.items()}


def group_runs(records: Records, track: str, include_unsubmitted: bool,
               include_replaced: bool = False) -> list[tuple[pd.DataFrame, dict | None]]:
    """(runs, current submission or None) per group on the track: a group whose setting was
    submitted again later (re-timed) is left out, as is a group never submitted, unless asked for
    (then with every completed run and no submission: their runs still measure their configuration)."""
    if records.table.empty:
        return []
    runs = records.table[(records.table["track"] == track) & (records.table["status"] != "interrupted")]
    entries = [e for e in records.submissions if e["track"] == track]
    out = []
    for entry in current_submissions(entries).values():
        rows = runs[runs["run_id"].isin([r["run_id"] for r in entry["runs"]])]
        if len(rows):
            out.append((rows, entry))
    shown = {entry["group"] for _, entry in out} if include_replaced else {e["group"] for e in entries}
    if include_unsubmitted:
        for gid, rows in runs.groupby("group", sort=False):
            if gid not in shown:
                out.append((rows, None))
    return out


def varying_hparams(table: pd.DataFrame) -> list[str]:
    """Labels naming, per group, the hyperparameters that differ between groups of the same optimizer."""
    labels = []
    parsed = [json.loads(h) for h in table["hparams"]]
    for i, (opt, hp) in enumerate(zip(table["optimizer"], parsed)):
        peers = [parsed[j] for j in range(len(parsed)) if table["optimizer"].iloc[j] == opt]
        keys = sorted(k for k in hp if any(p.get(k) != hp[k] for p in peers))
        labels.append(", ".join(f"{k}={hp[k]}" for k in keys) or str(table["group"].iloc[i]))
    return labels


def leaderboard(records: Records, track: str, include_unsubmitted: bool = True, rule: str | None = None,
                include_replaced: bool = False) -> pd.DataFrame:
    """One row per group on `track`, ranked by one rule (the track's, or `rule`: the other view of
    the same runs): first the submitted groups that are evidence under it, then unsubmitted groups
    whose runs would be, each by the rule's score (time: mean train time of the whole runs; steps:
    the schedule length T, then the mean final loss); then the rest by mean final loss.
    First crossing is a secondary column, AlgoPerf's median over the runs (a miss is infinite)."""
    judge = Rule.of_track(track, rule)
    budgets = tuning_budgets(records.sweeps, records.table)
    rows = []
    for runs, entry in group_runs(records, track, include_unsubmitted, include_replaced):
        first = runs.iloc[0]
        facts = [run_facts(r) for r in runs.to_dict("records")]
        steps = schedule_steps(first["hparams"])
        a = assess(facts, float(first["target"]), judge, bool(entry and entry.get("accepted_contended")))
        crossing = first_crossing(facts)
        ok = runs[runs["status"] == "ok"]
        train_lo, train_hi = a["train"].ci_t
        loss_lo, loss_hi = a["loss"].ci_t
        budget = budgets.get(tuned_setting(first), {})
        rows.append({
            "group": first["group"], "optimizer": first["optimizer"], "hardware": first["hardware"], "hparams": first["hparams"],
            "device": first["device"] if runs["device"].nunique() == 1 else "mixed devices",
            "target": float(first["target"]), "n": len(runs), "n_reached": crossing["n_reached"], "n_diverged": a["n_diverged"],
            "n_contended": int(runs["contended"].map(lambda c: c is True).sum()),
            "accepted_contended": entry.get("accepted_contended", 0) if entry else 0,
            "rule": judge.name, "steps": steps, "score": score(a, judge, steps),
            "train_mean": a["train"].mean, "train_lo": train_lo, "train_hi": train_hi,
            "train_norm_mean": normalised_time(ok, track),
            "loss_mean": a["loss"].mean, "loss_lo": loss_lo, "loss_hi": loss_hi,
            "crossing_time": crossing["median_time_s"], "crossing_steps": crossing["median_steps"],
            "passes": a["evidence"], "target_p": a["test"]["p"], "margin": a["test"].get("margin", math.nan),
            "tuning_trials": budget.get("trials", 0), "tuning_runs": budget.get("runs", 0), "tuning_device_s": budget.get("device_s", 0.0),
            "submission_id": entry["submission_id"] if entry else None,
            "evidence": None if entry is None else a["evidence"], "decided_under": None if entry is None else entry.get("rule", "legacy"),
            "run_ids": list(runs["run_id"]),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    submitted = table["evidence"].notna()
    table["tier"] = np.select([submitted & table["passes"], table["passes"]], [0, 1], 2)
    ranked = table["tier"] < 2
    table["sort_value"] = np.where(ranked, table["score"], table["loss_mean"])
    table["sort_loss"] = table["loss_mean"]
    table = table.sort_values(["tier", "sort_value", "sort_loss"], na_position="last").reset_index(drop=True)
    table["config"] = varying_hparams(table)
    for name in BASELINES:
        base = [baseline_row(table, name, h, d, judge.name) for h, d in zip(table["hardware"], table["device"])]
        table[f"baseline_{name}"] = [None if b is None else table["group"].iloc[b] for b in base]
        table[f"speedup_{name}"] = [math.nan if b is None or table["tier"].iloc[i] == 2
                                    else float(table["score"].iloc[b] / table["score"].iloc[i]) for i, b in enumerate(base)]
    record = {h: current_record(records.submissions, track, h, judge) for h in table["hardware"].unique()}
    table["record"] = [record[h] is not None and record[h]["group"] == g for h, g in zip(table["hardware"], table["group"])]
    return table


def normalised_time(ok: pd.DataFrame, track: str) -> float:
    """Mean train time of the whole runs normalised to the track's reference machine (NaN without a
    reference, or when a run lacks its machine figure: runs recorded before format version 3)."""
    ref = REFERENCE_MACHINES.get(track)
    if ref is None or ok.empty or ok["calib_ms"].isna().any():
        return math.nan
    return float((ok["train_time_s"] * ref["calib_ms"] / ok["calib_ms"]).mean())


def baseline_row(table: pd.DataFrame, optimizer: str, hardware: str, device: str, rule: str = "time") -> int | None:
    """The best-ranked group of `optimizer` on the same hardware class whose runs meet the rule
    (tiers 0 and 1); under `time` also on the same device model (two 2-core VMs of one class can
    differ twofold in speed; steps do not depend on the machine)."""
    ok = table[(table["optimizer"] == optimizer) & (table["hardware"] == hardware) & (table["tier"] < 2)
               & ((table["device"] == device) if rule == "time" else True)]
    return None if ok.empty else int(ok.index[0])


def plus_minus(mean: float, hi: float, spec: str) -> str:
    return stats.fmt(mean, spec) + ("" if math.isnan(hi) else f" ± {hi - mean:{spec}}")


def tokens(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e5 else stats.fmt(x, ".0f")


def evidence_cell(r) -> str:
    if r.group == YOUR_RUN:
        return YOUR_RUN
    if r.evidence is None:
        return "not submitted" + (" (its runs would pass)" if r.passes else "")
    mark = "✓" if r.evidence else "✗"
    test = (f" p={r.target_p:.2g}" if r.rule == "time" and r.target_p is not None and not math.isnan(r.target_p)
            else f" margin={r.margin:.4f}" if r.rule == "steps" and not math.isnan(r.margin) else "")
    accepted = f" ({r.accepted_contended} contended runs accepted)" if r.accepted_contended else ""
    return f"{mark}{' record' if r.record else ''}{test}{accepted}"


def crossing_cell(r) -> str:
    value = r.crossing_time if r.rule == "time" else r.crossing_steps
    shown = stats.fmt(value, ".1f" if r.rule == "time" else ".0f").replace("inf", "∞")
    return shown + (f" ({r.n_reached}/{r.n} reached)" if r.n_reached != r.n else "")


RULE_NOTES = {
    "time": "Ranked by the **time** rule (modded-nanogpt's main track): each entry is n runs of one schedule of T steps; "
            "its number is the mean train time of those whole runs (± 95 % t-interval half-width over seeds), and it is "
            "evidence when no run diverged, n ≥ 2 and the one-sided t-test (scipy.stats.ttest_1samp(losses, target, "
            "alternative=\"less\")) on the final losses gives p < 0.01. The record is the fastest such submission; a new one "
            "must be faster by Welch's test on the runs' train times (p < 0.01).",
    "steps": "Ranked by the **steps** rule (modded-nanogpt's optimization track, track 3: the stopping step is the same for "
             "every seed): each entry's number is its schedule length T, then its mean final loss; it is evidence when no run "
             "diverged and (target − mean final loss)·√n ≥ {threshold} (σ fixed at {sigma}: p < 0.001; margin column). A new "
             "record must satisfy (Δloss + Δsteps·{per100:g}/100)/√(1/n₁ + 1/n₂) ≥ {threshold} against the current one. "
             "Steps do not depend on the machine.",
}


def to_markdown(table: pd.DataFrame, track: str, target: float | None = None, note: str = "", rule: str | None = None) -> str:
    judge = Rule.of_track(track, rule if table.empty else table["rule"].iloc[0])
    head = f"### {track}" + (f" (target val loss {target}; rule: {judge.name})" if target is not None else f" (rule: {judge.name})")
    if table.empty:
        return head + f"\n\nNo runs recorded yet.{note}\n"
    time_rule = judge.name == "time"
    normalised = time_rule and bool(table["train_norm_mean"].notna().any())
    crossing = "first crossing: median time (s)" if time_rule else "first crossing: median step"
    columns = (["T (steps)", "**train time (s)**"] + (["normalised train time (s)"] if normalised else []) + ["final val loss"]
               if time_rule else ["**T (steps)**", "final val loss", "train time (s)"])
    lines = [
        head, "",
        "| # | optimizer | config | device | n | " + " | ".join(columns) + f" | {crossing} † | vs AdamW | vs Muon | tuning | "
        f"decision ({judge.name}) |",
        "|---:|---|---|---|---:|" + "---:|" * len(columns) + "---:|---:|---:|---|---|",
    ]
    for i, r in enumerate(table.itertuples()):
        n = f"{r.n}" + (f", {r.n_diverged} diverged" if r.n_diverged else "") + (f", {r.n_contended} contended" if r.n_contended else "")
        tuning = (f"{r.tuning_trials} trials · {r.tuning_runs} runs · {r.tuning_device_s:.0f} s" if r.tuning_trials else "—")
        speedups = " | ".join(stats.fmt(x, ".2f") + ("×" if not math.isnan(x) else "") for x in (r.speedup_adamw, r.speedup_muon))
        train = plus_minus(r.train_mean, r.train_hi, ".1f")
        loss = plus_minus(r.loss_mean, r.loss_hi, ".4f")
        cells = ([str(r.steps), train] + ([stats.fmt(r.train_norm_mean, ".1f")] if normalised else []) + [loss]
                 if time_rule else [str(r.steps), loss, train])
        lines.append(f"| {i + 1} | {r.optimizer} | {r.config} | {r.device} | {n} | " + " | ".join(cells)
                     + f" | {crossing_cell(r)} | {speedups} | {tuning} | {evidence_cell(r)} |")
    legacy = int((table["decided_under"] == "legacy").sum())
    other = int(table["decided_under"].isin([x for x in ("time", "steps") if x != judge.name]).sum())
    lines += [
        "",
        RULE_NOTES[judge.name].format(threshold=judge.threshold, sigma=judge.sigma, per100=judge.loss_per_step * 100)
        + " Decision: that rule applied to the latest submission's runs (✓ evidence, ✗ not; 'record': the best evidence "
        "on the hardware class)"
        + (f"; {legacy} of these submissions were decided, and are kept in records/submissions.jsonl, under the legacy rule "
           "(mean time to the first evaluation at the target)" if legacy else "")
        + (f"; {other} were submitted under the other rule" if other else "")
        + ". Final val loss: mean ± 95 % t-interval half-width over seeds. "
        "† First crossing, not the score: the first evaluation at or below the target, AlgoPerf's way — the median "
        "over all the entry's runs, a run that missed counting as infinite (∞ when half or more missed). vs AdamW / vs Muon: "
        "the baseline's number divided by this entry's, the baseline being the best-ranked entry of that optimizer that "
        "meets the rule on the same hardware class" + (" and device" if time_rule else "") + ". Tuning: the searches "
        "(scripts/sweep.py, scripts/find_steps.py) whose winner has these hyperparameters at any T (the grid "
        "that chose them and the step search that chose T), or, for a step search that no schedule up to the budget "
        "passed, whose longest probe has them (a re-timed entry keeps them): distinct trials · distinct runs (a run "
        "reused by a later search counts once) · device-seconds of training. Runs timed on a busy machine (contended: "
        "see the README's timing rules) count only when the submission accepted them, which the cell then says."
        + (f" Normalised train time: each run's time × the reference machine's figure / the run's own (calib_ms), the "
           f"reference being {REFERENCE_MACHINES[track]['machine']}; a reading aid across machines, not the record."
           if normalised else "")
        + note,
    ]
    return "\n".join(lines) + "\n"


def track_markdown(records_dir: str | Path, track: str, target: float | None, include_unsubmitted: bool = True,
                   rule: str | None = None) -> str:
    """The Markdown leaderboard of one track straight from a records folder (run.py prints this)."""
    return to_markdown(leaderboard(load_records(records_dir), track, include_unsubmitted, rule), track, target, rule=rule)


YOUR_RUN = "your run"  # the group of a just-finished run shown beside the official board


def board_after_run(official_dir: str | Path, track: str, target: float | None, row: dict, records_dir: str | Path) -> str:
    """What run.py prints when a run ends: the track's official board and, when the run was
    recorded elsewhere (runs/ by default), that run as one extra entry marked as yours."""
    records = load_records(official_dir)
    if Path(records_dir).resolve() == Path(official_dir).resolve():
        return to_markdown(leaderboard(records, track), track, target)
    mine = pd.DataFrame([row], columns=COLUMNS)
    for col in NUMERIC:
        mine[col] = pd.to_numeric(mine[col])
    mine["group"] = YOUR_RUN
    records.table = pd.concat([records.table, mine], ignore_index=True) if len(records.table) else mine
    note = f"\n\n'{YOUR_RUN}': this run, recorded in {records_dir}, not on the official board ({official_dir})."
    return to_markdown(leaderboard(records, track), track, target, note)


def curve(records: Records, run_ids: list[str]) -> dict | None:
    """Mean validation curve over the completed runs: per evaluation step, the mean train time, the
    mean loss and the range over seeds. None when no run completed."""
    rows = records.table[records.table["run_id"].isin(run_ids) & (records.table["status"] == "ok")]
    per_run = []
    for log in rows["log"]:
        evals = parse_log(records.directory / log).training.evals
        per_run.append({e.step: (e.time_ms / 1000, e.loss) for e in evals})
    if not per_run:
        return None
    steps = sorted(set.intersection(*(set(p) for p in per_run)))
    times = np.array([[p[s][0] for s in steps] for p in per_run])
    losses = np.array([[p[s][1] for s in steps] for p in per_run])
    return {"steps": np.array(steps), "time_s": times.mean(0), "mean": losses.mean(0), "lo": losses.min(0), "hi": losses.max(0),
            "n": len(per_run)}


def run_times(records: Records, table: pd.DataFrame) -> dict[str, list[float]]:
    """Per group, the train times of its whole runs (those that completed: status ok)."""
    t = records.table.set_index("run_id")
    return {g: [float(t.at[r, "train_time_s"]) for r in ids if t.at[r, "status"] == "ok"]
            for g, ids in zip(table["group"], table["run_ids"])} if len(table) else {}


def best_per_optimizer(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop_duplicates("optimizer", keep="first")


def replace_readme_section(readme: Path, body: str, name: str = "leaderboard") -> None:
    """Rewrite the part of the README between the markers of section `name` (readme_markers)."""
    if not readme.exists():
        raise UserError(f"{readme} does not exist; pass the README to update with --readme PATH")
    text = readme.read_text()
    begin, finish = readme_markers(name)
    start, end = text.find(begin), text.find(finish)
    if start < 0 or end < 0 or end < start:
        raise UserError(f"{readme} has no '{begin}' ... '{finish}' markers; add them (in that order) "
                        f"where the {name} section should go")
    readme.write_text(text[: start + len(begin)] + "\n" + body.rstrip() + "\n" + text[end:])
