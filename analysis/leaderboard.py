"""Per-track leaderboards built only from the records (table, submissions, sweeps) and the logs;
never edited by hand.

A leaderboard row is a configuration group (same code, harness, track and hyperparameters). A
submitted group uses exactly the runs of its latest submission and shows that submission's
verdict; other groups (shown on request) use every completed run of the configuration.
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
from analysis.submissions import current_record, latest_per_group
from nanogpt.errors import UserError
from nanogpt.recording import COLUMNS, KEY_COLUMNS, NUMERIC, group_id
from nanogpt.runlog import parse_log

BASELINES = ("adamw", "muon")
# Reference machines of the normalised-time column (CPU tracks, where machines of one hardware class
# differ twofold): per track, the machine figure (calib_ms, nanogpt/contention.py) of the machine the
# column refers to. A run's normalised time = its time x reference calib_ms / its own calib_ms.
# Raw times stay the record; the column is a reading aid across machines.
REFERENCE_MACHINES: dict[str, dict] = {
    "tiny-cpu": {"calib_ms": 203.7, "machine": "AMD EPYC 2-core VM, median of 3 runs alone (2026-12-02, torch 2.13.0+cpu)"},
}
README_START, README_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


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


def tuning_budgets(sweeps: list[dict]) -> dict[str, dict]:
    """Per winning configuration, the summed budget of the searches that picked it (a resumed
    search appears several times under one sweep_id: only its latest entry counts)."""
    latest: dict[str, dict] = {}
    for s in sweeps:
        latest[s["sweep_id"]] = s
    budgets: dict[str, dict] = {}
    for s in latest.values():
        if s.get("winner") is None:
            continue
        b = budgets.setdefault(s["winner"]["group"], {"trials": 0, "runs": 0, "device_s": 0.0})
        b["trials"] += s["budget"]["trials"]
        b["runs"] += s["budget"]["runs"]
        b["device_s"] += s["budget"]["device_s"]
    return budgets


def group_runs(records: Records, track: str, include_unsubmitted: bool) -> list[tuple[pd.DataFrame, dict | None]]:
    """(runs, latest submission or None) per group on the track."""
    if records.table.empty:
        return []
    runs = records.table[(records.table["track"] == track) & (records.table["status"] != "interrupted")]
    latest = latest_per_group(e for e in records.submissions if e["track"] == track)
    out = []
    for entry in latest.values():
        rows = runs[runs["run_id"].isin([r["run_id"] for r in entry["runs"]])]
        if len(rows):
            out.append((rows, entry))
    if include_unsubmitted:
        for gid, rows in runs.groupby("group", sort=False):
            if gid not in latest:
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


def leaderboard(records: Records, track: str, include_unsubmitted: bool = True) -> pd.DataFrame:
    """One row per group on `track`, best first: groups with evidence whose runs all reached the
    target by mean time, then the other groups that reached it, then those that did not (by loss)."""
    budgets = tuning_budgets(records.sweeps)
    rows = []
    for runs, entry in group_runs(records, track, include_unsubmitted):
        first = runs.iloc[0]
        hit = runs[runs["reached_target"]]
        times = hit["time_to_target_s"].to_numpy(float)
        losses = runs.loc[runs["status"] == "ok", "final_val_loss"].to_numpy(float)
        t_lo, t_hi = stats.t_interval(times)
        l_lo, l_hi = stats.t_interval(losses)
        budget = budgets.get(first["group"], {})
        rows.append({
            "group": first["group"], "optimizer": first["optimizer"], "hardware": first["hardware"], "hparams": first["hparams"],
            "device": first["device"] if runs["device"].nunique() == 1 else "mixed devices",
            "target": float(first["target"]), "n": len(runs), "n_reached": len(hit),
            "n_diverged": int((runs["status"] == "diverged").sum()),
            "n_contended": int(runs["contended"].map(lambda c: c is True).sum()),
            "accepted_contended": entry.get("accepted_contended", 0) if entry else 0,
            "time_mean": times.mean() if len(times) else math.nan, "time_lo": t_lo, "time_hi": t_hi,
            "time_norm_mean": normalised_time(hit, track),
            "steps_to_target": hit["steps_to_target"].mean() if len(hit) else math.nan,
            "tokens_to_target": hit["tokens_to_target"].mean() if len(hit) else math.nan,
            "loss_mean": losses.mean() if len(losses) else math.nan, "loss_lo": l_lo, "loss_hi": l_hi,
            "tuning_trials": budget.get("trials", 0), "tuning_runs": budget.get("runs", 0), "tuning_device_s": budget.get("device_s", 0.0),
            "submission_id": entry["submission_id"] if entry else None, "evidence": None if entry is None else bool(entry["evidence"]),
            "target_p": None if entry is None else entry["target_test"]["p"], "run_ids": list(runs["run_id"]),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    all_reached = table["n_reached"] == table["n"]
    evidence = table["evidence"].map(lambda e: e is True)
    table["tier"] = np.select([all_reached & evidence, all_reached, table["n_reached"] > 0], [0, 1, 2], 3)
    table["sort_value"] = np.where(table["tier"] < 3, table["time_mean"], table["loss_mean"])
    table = table.sort_values(["tier", "sort_value"], na_position="last").reset_index(drop=True)
    table["config"] = varying_hparams(table)
    for name in BASELINES:
        base = [baseline_row(table, name, h, d) for h, d in zip(table["hardware"], table["device"])]
        table[f"baseline_{name}"] = [None if b is None else table["group"].iloc[b] for b in base]
        table[f"speedup_{name}"] = [math.nan if b is None or table["n_reached"].iloc[i] != table["n"].iloc[i]
                                    else float(table["time_mean"].iloc[b] / table["time_mean"].iloc[i]) for i, b in enumerate(base)]
    record = {h: current_record(records.submissions, track, h) for h in table["hardware"].unique()}
    table["record"] = [record[h] is not None and record[h]["group"] == g for h, g in zip(table["hardware"], table["group"])]
    return table


def normalised_time(hit: pd.DataFrame, track: str) -> float:
    """Mean time to target normalised to the track's reference machine (NaN without a reference,
    or when a run lacks its machine figure: runs recorded before format version 3)."""
    ref = REFERENCE_MACHINES.get(track)
    if ref is None or hit.empty or hit["calib_ms"].isna().any():
        return math.nan
    return float((hit["time_to_target_s"] * ref["calib_ms"] / hit["calib_ms"]).mean())


def baseline_row(table: pd.DataFrame, optimizer: str, hardware: str, device: str) -> int | None:
    """The fastest group of `optimizer` on the same hardware class and device model in which every
    run reached the target (two 2-core VMs of one class can differ twofold in speed)."""
    ok = table[(table["optimizer"] == optimizer) & (table["hardware"] == hardware) & (table["device"] == device)
               & (table["n_reached"] == table["n"])]
    return None if ok.empty else int(ok.index[0])


def plus_minus(mean: float, hi: float, spec: str) -> str:
    return stats.fmt(mean, spec) + ("" if math.isnan(hi) else f" ± {hi - mean:{spec}}")


def tokens(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e5 else stats.fmt(x, ".0f")


def evidence_cell(r) -> str:
    if r.group == YOUR_RUN:
        return YOUR_RUN
    if r.evidence is None:
        return "not submitted"
    mark = "✓" if r.evidence else "✗"
    p = "" if r.target_p is None else f" p={r.target_p:.2g}"
    accepted = f" ({r.accepted_contended} contended runs accepted)" if r.accepted_contended else ""
    return f"{mark}{' record' if r.record else ''}{p}{accepted}"


def to_markdown(table: pd.DataFrame, track: str, target: float | None = None, note: str = "") -> str:
    head = f"### {track}" + (f" (target val loss {target})" if target is not None else "")
    if table.empty:
        return head + f"\n\nNo runs recorded yet.{note}\n"
    normalised = bool(table["time_norm_mean"].notna().any())
    lines = [
        head, "",
        "| # | optimizer | config | device | n | time to target (s) | " + ("normalised time (s) | " if normalised else "")
        + "steps to target | tokens to target | final val loss | vs AdamW | vs Muon | tuning | evidence |",
        "|---:|---|---|---|---:|---:|" + ("---:|" if normalised else "") + "---:|---:|---:|---:|---:|---|---|",
    ]
    for i, r in enumerate(table.itertuples()):
        n = f"{r.n}" + (f" ({r.n_reached} reached)" if r.n_reached != r.n else "") + (f", {r.n_diverged} diverged" if r.n_diverged else "")
        n += f", {r.n_contended} contended" if r.n_contended else ""
        tuning = (f"{r.tuning_trials} trials · {r.tuning_runs} runs · {r.tuning_device_s:.0f} s" if r.tuning_trials else "—")
        speedups = " | ".join(stats.fmt(x, ".2f") + ("×" if not math.isnan(x) else "") for x in (r.speedup_adamw, r.speedup_muon))
        lines.append(
            f"| {i + 1} | {r.optimizer} | {r.config} | {r.device} | {n} | {plus_minus(r.time_mean, r.time_hi, '.1f')} | "
            + (f"{stats.fmt(r.time_norm_mean, '.1f')} | " if normalised else "")
            + f"{stats.fmt(r.steps_to_target, '.0f')} | {tokens(r.tokens_to_target)} | {plus_minus(r.loss_mean, r.loss_hi, '.4f')} | "
            f"{speedups} | {tuning} | {evidence_cell(r)} |"
        )
    lines += [
        "",
        "Mean ± 95 % t-interval half-width over seeds (time: over the runs that reached the target). "
        "vs AdamW / vs Muon: the baseline's mean time to target divided by this group's, the baseline being the fastest "
        "group of that optimizer on the same hardware class and device whose every run reached the target. Tuning: the searches "
        "(scripts/sweep.py, scripts/find_steps.py) whose winner is this configuration: trials · runs · device-seconds of "
        "training. Evidence: the latest submission's one-sided test that the mean final loss is below the target; runs timed "
        "on a busy machine (contended: see the README's timing rules) count only when the submission accepted them, which "
        "the cell then says."
        + (f" Normalised time: each run's time × the reference machine's figure / the run's own (calib_ms), the reference "
           f"being {REFERENCE_MACHINES[track]['machine']}; a reading aid across machines, not the record." if normalised else "")
        + note,
    ]
    return "\n".join(lines) + "\n"


def track_markdown(records_dir: str | Path, track: str, target: float | None, include_unsubmitted: bool = True) -> str:
    """The Markdown leaderboard of one track straight from a records folder (run.py prints this)."""
    return to_markdown(leaderboard(load_records(records_dir), track, include_unsubmitted), track, target)


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
    """Per group, the times to target of its runs that reached the target."""
    t = records.table.set_index("run_id")
    return {g: [float(t.at[r, "time_to_target_s"]) for r in ids if t.at[r, "reached_target"]]
            for g, ids in zip(table["group"], table["run_ids"])} if len(table) else {}


def best_per_optimizer(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop_duplicates("optimizer", keep="first")


def replace_readme_section(readme: Path, body: str) -> None:
    """Rewrite the part of the README between the leaderboard markers."""
    if not readme.exists():
        raise UserError(f"{readme} does not exist; pass the README to update with --readme PATH")
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < 0 or end < start:
        raise UserError(f"{readme} has no '{README_START}' ... '{README_END}' markers; add them (in that order) "
                        "where the leaderboard should go")
    readme.write_text(text[: start + len(README_START)] + "\n" + body.rstrip() + "\n" + text[end:])
