"""Submissions: n runs of one configuration (same code, harness, track and hyperparameters,
different seeds) and the harness's decision on them.

The decision (records/README.md has the rules):
- evidence: no run diverged, n >= 2, and the one-sided t-test says the mean final val loss is
  below the target with p < alpha (0.01, the GPT-2 speedrun rule);
- new record: evidence, every run reached the target, and Welch's test says the mean time to
  target is below the current record's (the fastest earlier submission with evidence on the same
  track and hardware class, in another configuration) with p < alpha, or there is no record yet;
- when evidence is short, how many runs in total the failing test would need (80 % power,
  taking the observed mean and spread as the truth).
Every number is recomputed by `verify` from the logs; the entry stores the per-run facts it used.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable

import scipy

from analysis import stats
from nanogpt.errors import UserError
from nanogpt.recording import ENTRY_VERSION, KEY_COLUMNS, group_id, group_key

FACTS = ["run_id", "seed", "status", "final_val_loss", "reached_target", "time_to_target_s", "steps_to_target",
         "tokens_to_target", "train_time_s", "world_size", "contended"]


def plain(value):
    """JSON-ready Python value: numpy scalars unwrapped, NaN and infinities as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonable(obj):
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return plain(obj)


def run_facts(row: dict) -> dict:
    """The per-run figures a decision uses, from a table row (or a row recomputed from a log)."""
    facts = {k: plain(row[k]) for k in FACTS}
    for k in ("seed", "world_size", "steps_to_target", "tokens_to_target"):
        facts[k] = None if facts[k] is None else int(facts[k])
    facts["reached_target"] = bool(facts["reached_target"])
    facts["contended"] = None if facts["contended"] is None else bool(facts["contended"])  # None: not measured (before v3)
    return facts


def key_values(row: dict) -> dict:
    return dict(zip(KEY_COLUMNS, group_key(row)))


def check_group(rows: list[dict]) -> None:
    """Refuse a set of runs that is not one configuration over distinct seeds."""
    if not rows:
        raise UserError("a submission needs at least one run")
    first = group_key(rows[0])
    for r in rows[1:]:
        if group_key(r) != first:
            diff = [c for c, a, b in zip(KEY_COLUMNS, first, group_key(r)) if a != b]
            raise UserError(f"runs {rows[0]['run_id']} and {r['run_id']} differ in {', '.join(diff)}: "
                            "a submission is one configuration (same code and hyperparameters) over several seeds")
    devices = {str(r.get("device")) for r in rows}
    if len(devices) > 1:
        raise UserError(f"the runs ran on different devices ({', '.join(sorted(devices))}): their times are not comparable; "
                        "submit the runs of one machine")
    seen: dict[int, str] = {}
    for r in rows:
        seed = int(r["seed"])
        if seed in seen:
            raise UserError(f"runs {seen[seed]} and {r['run_id']} repeat seed {seed}: each seed is one independent run")
        seen[seed] = r["run_id"]
    interrupted = [r["run_id"] for r in rows if r["status"] == "interrupted"]
    if interrupted:
        raise UserError(f"run {interrupted[0]} was interrupted: it is not a result; rerun that seed")


def latest_per_group(entries: Iterable[dict]) -> dict[str, dict]:
    """The newest submission of each configuration (a resubmission with more seeds replaces the older one)."""
    latest: dict[str, dict] = {}
    for e in entries:
        if e["group"] not in latest or e["date"] >= latest[e["group"]]["date"]:
            latest[e["group"]] = e
    return latest


def is_record_candidate(entry: dict) -> bool:
    return bool(entry["evidence"]) and entry["n_reached"] == entry["n"] and entry["time_to_target_s"]["mean"] is not None


def current_record(entries: Iterable[dict], track: str, hardware: str, exclude_group: str | None = None) -> dict | None:
    """The fastest submission with evidence (every run reaching the target) on a track and hardware class."""
    candidates = [e for e in latest_per_group(entries).values()
                  if e["track"] == track and e["hardware"] == hardware and e["group"] != exclude_group and is_record_candidate(e)]
    return min(candidates, key=lambda e: e["time_to_target_s"]["mean"], default=None)


def decide(facts: list[dict], target: float, record: dict | None, alpha: float = stats.ALPHA,
           confidence: float = stats.CONFIDENCE, accept_contended: bool = False) -> dict:
    """Statistics and decision for one set of runs (the part of the entry that `verify` recomputes).
    Runs timed on a busy machine (contended) are no evidence unless `accept_contended`, which the
    entry then states (accepted_contended: how many)."""
    n = len(facts)
    losses = [f["final_val_loss"] for f in facts if f["status"] == "ok"]
    times = [f["time_to_target_s"] for f in facts if f["reached_target"]]
    n_diverged = sum(f["status"] == "diverged" for f in facts)
    n_reached = sum(f["reached_target"] for f in facts)
    loss = stats.summarize(losses, confidence)
    test = stats.below_target(losses, target)
    reasons = []
    n_contended = sum(bool(f.get("contended")) for f in facts)
    if n_diverged:
        reasons.append(f"{n_diverged} of {n} runs diverged")
    if n_contended and not accept_contended:
        reasons.append(f"{n_contended} of {n} runs were timed on a busy machine (contended): rerun those seeds alone, "
                       "or pass --accept-contended to submit them as they are (the leaderboard then says so)")
    if n < 2:
        reasons.append("a single run cannot show significance: submit at least 2 seeds")
    elif not test.p < alpha:
        reasons.append(f"mean final val loss {loss.mean:.4f} is not below the target {target} with p < {alpha} "
                       f"(p = {stats.fmt(test.p, '.3g', 'n/a')})")
    evidence = not reasons
    needed = {"target": None if test.p < alpha else stats.runs_for_target(losses, target, alpha), "record": None}
    comparison = {"against": None}
    if record is not None:
        reference = [r["time_to_target_s"] for r in record["runs"]]
        welch = stats.welch_less(times, reference)
        comparison = {"against": record["submission_id"], "group": record["group"], "optimizer": record["optimizer"],
                      "reference_mean_s": stats.summarize(reference, confidence).mean, **welch.as_dict(),
                      "passed": bool(welch.p < alpha)}
    all_reached = n_reached == n
    new_record = evidence and all_reached and (record is None or comparison["passed"])
    if evidence and not all_reached:
        reasons.append(f"{n - n_reached} of {n} runs did not reach the target: no time to target for them")
    elif evidence and not new_record:
        reasons.append(f"not faster than the record {record['submission_id']} ({comparison['reference_mean_s']:.1f} s) "
                       f"with p < {alpha} (Welch p = {comparison['p']:.3g})")
        needed["record"] = stats.runs_for_welch(times, [r["time_to_target_s"] for r in record["runs"]], alpha)
    return jsonable({
        "alpha": alpha, "confidence": confidence, "n": n, "n_diverged": n_diverged, "n_reached": n_reached,
        "runs": facts, "final_val_loss": loss.as_dict(), "time_to_target_s": stats.summarize(times, confidence).as_dict(),
        "steps_to_target": _mean(f["steps_to_target"] for f in facts), "tokens_to_target": _mean(f["tokens_to_target"] for f in facts),
        "target_test": {**test.as_dict(), "passed": bool(test.p < alpha)}, "record_test": comparison,
        "runs_needed": needed, "evidence": evidence, "new_record": new_record, "reasons": reasons,
        **({"accepted_contended": n_contended} if accept_contended and n_contended else {}),
    })


def _mean(values) -> float | None:
    x = stats.clean(values)
    return float(x.mean()) if len(x) else None


def make_entry(rows: list[dict], record: dict | None, alpha: float = stats.ALPHA, confidence: float = stats.CONFIDENCE,
               now: datetime.datetime | None = None, accept_contended: bool = False) -> dict:
    """A submission entry for submissions.jsonl (rows already checked with `check_group`)."""
    now = now or datetime.datetime.now(datetime.UTC)
    first = rows[0]
    gid = group_id(first)
    facts = sorted((run_facts(r) for r in rows), key=lambda f: f["seed"])
    return {
        "schema_version": ENTRY_VERSION, "kind": "submission",
        "submission_id": f"{now:%Y%m%d-%H%M%S}-{first['optimizer']}-{gid}", "date": now.isoformat(timespec="seconds"),
        "track": first["track"], "hardware": first["hardware"], "optimizer": first["optimizer"], "group": gid,
        "key": key_values(first), "target": float(first["target"]), "scipy": scipy.__version__,
        **decide(facts, float(first["target"]), record, alpha, confidence, accept_contended),
    }


def describe(entry: dict) -> str:
    """The decision in a few human-readable lines."""
    def num(x, spec=".4f"):
        return stats.fmt(x, spec, "n/a")

    loss, time = entry["final_val_loss"], entry["time_to_target_s"]
    seeds = ", ".join(str(r["seed"]) for r in entry["runs"])
    lines = [
        f"submission {entry['submission_id']}: {entry['optimizer']} on {entry['track']} ({entry['hardware']}), "
        f"group {entry['group']}, {entry['n']} runs (seeds {seeds})",
        f"  final val loss  mean {num(loss['mean'])}  sd {num(loss['sd'])}  95% CI t [{num(loss['ci_t'][0])}, {num(loss['ci_t'][1])}]"
        f"  bootstrap [{num(loss['ci_bootstrap'][0])}, {num(loss['ci_bootstrap'][1])}]",
        f"  time to target  mean {num(time['mean'], '.2f')} s  95% CI t [{num(time['ci_t'][0], '.2f')}, {num(time['ci_t'][1], '.2f')}]"
        f"  bootstrap [{num(time['ci_bootstrap'][0], '.2f')}, {num(time['ci_bootstrap'][1], '.2f')}]"
        f"  ({entry['n_reached']}/{entry['n']} reached {entry['target']}, {entry['n_diverged']} diverged)",
        f"  target test     mean < {entry['target']}: t = {num(entry['target_test']['statistic'], '.3g')}, "
        f"p = {num(entry['target_test']['p'], '.3g')} (needs p < {entry['alpha']})",
    ]
    rec = entry["record_test"]
    if rec["against"]:
        lines.append(f"  record test     vs {rec['against']} ({rec['optimizer']}, {num(rec['reference_mean_s'], '.2f')} s): "
                     f"Welch t = {num(rec['statistic'], '.3g')}, p = {num(rec['p'], '.3g')}")
    else:
        lines.append("  record test     no earlier record on this track and hardware")
    verdict = "evidence ✓" if entry["evidence"] else "evidence ✗"
    verdict += ", NEW RECORD" if entry["new_record"] else ""
    verdict += f" ({entry['accepted_contended']} contended runs accepted)" if entry.get("accepted_contended") else ""
    lines.append(f"  decision        {verdict}")
    lines += [f"    - {r}" for r in entry["reasons"]]
    for test, n in entry["runs_needed"].items():
        if n is not None:
            lines.append(f"  more runs       about {n} runs in total (+{max(n - entry['n'], 0)}) for the {test} test at 80% power")
    return "\n".join(lines)
