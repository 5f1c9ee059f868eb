"""Submissions: n runs of one configuration (same code, harness, track and hyperparameters,
different seeds, hence one schedule length T) and the harness's decision on them.

Two rules, computed from the same runs (records/README.md "The rules"; constants in
nanogpt.tracks.Track; formulas in analysis.stats):
- `time` (modded-nanogpt's main track): score = the mean train time of the whole runs of the fixed
  schedule; evidence = no run diverged, n >= 2 and ttest_1samp(final losses, target,
  alternative="less") gives p < 0.01; new record = evidence and Welch's test says the mean train
  time is below the current record's with p < 0.01 (or there is no record);
- `steps` (modded-nanogpt's optimization track, track 3; no per-run early stopping): score = T;
  evidence = no run diverged and (target - mean final loss) * sqrt(n) >= 0.004 (sigma fixed at
  0.0013, p < 0.001); new record = evidence and (dloss + dsteps * 0.0045/100) / sqrt(1/n1 + 1/n2)
  >= 0.004 against the current record (or there is no record).
Runs timed on a busy machine are no evidence unless accepted. First crossing of the target is
reported, not judged: AlgoPerf's median over the runs, a miss counting as infinite. When evidence
is short, how many runs in total the failing test would need (80 % power, taking the observed
means as the truth). Each entry states its `rule`; entries without one were decided by the legacy
rule (mean time to the first evaluation at the target, over the runs that reached it), which
`decide_legacy` keeps so that `verify` recomputes them as they were decided.
Every number is recomputed by `verify` from the logs; the entry stores the per-run facts it used.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import scipy

from analysis import stats
from nanogpt.errors import UserError
from nanogpt.recording import ENTRY_VERSION, KEY_COLUMNS, group_id, group_key
from nanogpt.tracks import TRACKS, Track

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


def setting(values: Mapping) -> tuple:
    """What a re-timing repeats: the track, hardware class, optimizer, resolved hyperparameters and
    world size of a table row (or of a submission: `entry_setting`). Runs of one setting under
    another harness or track identity are another configuration, but the same schedule re-run."""
    return (values["track"], values["hardware"], values["optimizer"], values["hparams"], int(values["world_size"]))


def entry_setting(entry: dict) -> tuple:
    return setting({**entry["key"], "hardware": entry["hardware"]})


def current_submissions(entries: Iterable[dict]) -> dict[str, dict]:
    """By group, the newest submission of each setting: a resubmission with more seeds, or the same
    schedule re-timed (under a newer harness, or with the whole board on one machine), replaces
    the older entry on the board and in the record."""
    newest: dict[tuple, dict] = {}
    for e in entries:
        k = entry_setting(e)
        if k not in newest or e["date"] >= newest[k]["date"]:
            newest[k] = e
    return {e["group"]: e for e in newest.values()}


RULES = ("time", "steps")


@dataclass(frozen=True)
class Rule:
    """A decision rule and its constants (from the track: nanogpt.tracks.Track)."""

    name: str
    alpha: float = stats.ALPHA
    sigma: float = 0.0013
    threshold: float = 0.004
    loss_per_step: float = 0.0045 / 100

    def __post_init__(self):
        if self.name not in RULES:
            raise UserError(f"unknown rule {self.name!r}; rules: {', '.join(RULES)}")

    @classmethod
    def of_track(cls, track: Track | str, name: str | None = None) -> Rule:
        """The track's rule (or `name`, the other view) with the track's constants."""
        t = track if isinstance(track, Track) else TRACKS.get(track)
        if t is None:  # a track this harness does not define: the default constants
            return cls(name or "time")
        return cls(name or t.rule, stats.ALPHA, t.steps_sigma, t.steps_threshold, t.steps_loss_per_step)

    @classmethod
    def of_entry(cls, entry: dict) -> Rule:
        return cls(entry["rule"], **entry["rule_params"])

    def params(self) -> dict:
        return {"alpha": self.alpha} if self.name == "time" else \
            {"sigma": self.sigma, "threshold": self.threshold, "loss_per_step": self.loss_per_step}


def schedule_steps(hparams: str | dict) -> int:
    """T, the schedule length of a configuration (its resolved hyperparameters hold `steps`)."""
    return int((json.loads(hparams) if isinstance(hparams, str) else hparams)["steps"])


def assess(facts: list[dict], target: float, rule: Rule, accept_contended: bool = False, confidence: float = stats.CONFIDENCE) -> dict:
    """A set of runs under one rule, before any record: the target test, the reasons it is no
    evidence (empty: evidence), the loss and train-time summaries. The leaderboard calls this for
    every group, submitted or not, in either rule's view."""
    n = len(facts)
    ok = [f for f in facts if f["status"] == "ok"]
    losses = [f["final_val_loss"] for f in ok]
    loss = stats.summarize(losses, confidence)
    n_diverged = sum(f["status"] == "diverged" for f in facts)
    n_contended = sum(bool(f.get("contended")) for f in facts)
    reasons = []
    if n_diverged:
        reasons.append(f"{n_diverged} of {n} runs diverged")
    if n_contended and not accept_contended:
        reasons.append(f"{n_contended} of {n} runs were timed on a busy machine (contended): rerun those seeds alone, "
                       "or pass --accept-contended to submit them as they are (the leaderboard then says so)")
    if rule.name == "time":
        t = stats.below_target(losses, target)
        test = {**t.as_dict(), "passed": bool(t.p < rule.alpha)}
        if n < 2:
            reasons.append("a single run cannot show significance: submit at least 2 seeds")
        elif not test["passed"]:
            reasons.append(f"mean final val loss {loss.mean:.4f} is not below the target {target} with p < {rule.alpha} "
                           f"(one-sided t-test, p = {stats.fmt(t.p, '.3g', 'n/a')})")
    else:
        margin = stats.steps_margin(losses, target)
        test = {"margin": margin, "threshold": rule.threshold, "z": margin / rule.sigma, "p": stats.z_p(margin, rule.sigma),
                "passed": bool(margin >= rule.threshold)}
        if not test["passed"]:
            reasons.append(f"(target - mean final val loss) x sqrt(n) = {stats.fmt(margin, '.4f', 'n/a')} is below "
                           f"{rule.threshold} (fixed sigma {rule.sigma}: z = {stats.fmt(test['z'], '.2f', 'n/a')})")
    train = stats.summarize([f["train_time_s"] for f in ok], confidence)
    return {"n": n, "n_diverged": n_diverged, "n_contended": n_contended, "losses": losses, "loss": loss, "train": train,
            "train_times": [f["train_time_s"] for f in ok], "test": test, "reasons": reasons, "evidence": not reasons}


def first_crossing(facts: list[dict]) -> dict:
    """AlgoPerf's first crossing: medians over all runs of the time and step of the first evaluation
    at or below the target, a run that missed (or diverged) counting as infinite (JSON: null)."""
    hit = [f for f in facts if f["reached_target"]]
    return {"median_time_s": stats.median_with_misses([f["time_to_target_s"] for f in hit], len(facts)),
            "median_steps": stats.median_with_misses([f["steps_to_target"] for f in hit], len(facts)),
            "n_reached": len(hit)}


def score(entry_or_assessment: dict, rule: Rule, steps: int) -> float:
    """The one number a rule ranks by (lower is better): mean train time of the whole runs, or T."""
    return float(entry_or_assessment["train"].mean) if rule.name == "time" else float(steps)


def standing(entry: dict, rule: Rule) -> dict:
    """An earlier submission under `rule`, recomputed from the facts it stores (any entry, legacy
    ones included: their facts hold the final losses and train times)."""
    steps = schedule_steps(entry["key"]["hparams"])
    a = assess(entry["runs"], entry["target"], rule, bool(entry.get("accepted_contended")))
    return {**a, "steps": steps, "score": score(a, rule, steps)}


def current_record(entries: Iterable[dict], track: str, hardware: str, rule: Rule, exclude: tuple | None = None) -> dict | None:
    """The record under `rule` on a track and hardware class: among the current submission of every
    other setting (`exclude`: the one being judged), those that are evidence under `rule`, the best
    by its score (time: lowest mean train time; steps: lowest T, then lowest mean final loss)."""
    best, key = None, None
    for e in current_submissions(entries).values():
        if e["track"] != track or e["hardware"] != hardware or entry_setting(e) == exclude:
            continue
        s = standing(e, rule)
        k = (s["score"], s["loss"].mean)
        if s["evidence"] and (key is None or k < key):
            best, key = e, k
    return best


def decide(facts: list[dict], target: float, steps: int, record: dict | None, rule: Rule,
           confidence: float = stats.CONFIDENCE, accept_contended: bool = False) -> dict:
    """Statistics and decision for one set of runs under `rule` (the part of the entry that `verify`
    recomputes). `steps` is T; `record` the current record under the same rule (or None). Runs timed
    on a busy machine (contended) are no evidence unless `accept_contended`, which the entry then
    states (accepted_contended: how many)."""
    a = assess(facts, target, rule, accept_contended, confidence)
    reasons, test, evidence = list(a["reasons"]), a["test"], a["evidence"]
    needed = {"target": None, "record": None}
    if not test["passed"]:
        needed["target"] = (stats.runs_for_target(a["losses"], target, rule.alpha) if rule.name == "time"
                            else stats.runs_for_margin(a["losses"], target, rule.threshold, rule.sigma))
    comparison: dict = {"against": None}
    if record is not None:
        ref = standing(record, rule)
        comparison = {"against": record["submission_id"], "group": record["group"], "optimizer": record["optimizer"]}
        if rule.name == "time":
            welch = stats.welch_less(a["train_times"], ref["train_times"])
            comparison |= {"reference_train_time_s": ref["train"].mean, **welch.as_dict(), "passed": bool(welch.p < rule.alpha)}
        else:
            margin = stats.pairwise_margin(a["losses"], steps, ref["losses"], ref["steps"], rule.loss_per_step)
            comparison |= {"reference_steps": ref["steps"], "reference_mean_loss": ref["loss"].mean, "margin": margin,
                           "threshold": rule.threshold, "passed": bool(margin >= rule.threshold)}
    new_record = evidence and (record is None or comparison["passed"])
    if evidence and not new_record:
        if rule.name == "time":
            reasons.append(f"not faster than the record {record['submission_id']} ({comparison['reference_train_time_s']:.1f} s "
                           f"per run) with p < {rule.alpha} (Welch p = {comparison['p']:.3g})")
            needed["record"] = stats.runs_for_welch(a["train_times"], ref["train_times"], rule.alpha)
        else:
            reasons.append(f"not better than the record {record['submission_id']} (T = {ref['steps']}, mean loss "
                           f"{ref['loss'].mean:.4f}): pairwise margin {stats.fmt(comparison['margin'], '.4f', 'n/a')} "
                           f"< {rule.threshold}")
            needed["record"] = stats.runs_for_pairwise(a["losses"], steps, ref["losses"], ref["steps"], rule.loss_per_step,
                                                       rule.threshold, rule.sigma)
    return jsonable({
        "rule": rule.name, "rule_params": rule.params(), "confidence": confidence, "n": a["n"], "n_diverged": a["n_diverged"],
        "steps": steps, "runs": facts, "final_val_loss": a["loss"].as_dict(), "train_time_s": a["train"].as_dict(),
        "score": score(a, rule, steps), "first_crossing": first_crossing(facts),
        "target_test": test, "record_test": comparison, "runs_needed": needed, "evidence": evidence, "new_record": new_record,
        "reasons": reasons, **({"accepted_contended": a["n_contended"]} if accept_contended and a["n_contended"] else {}),
    })


def make_entry(rows: list[dict], record: dict | None, rule: Rule, confidence: float = stats.CONFIDENCE,
               now: datetime.datetime | None = None, accept_contended: bool = False) -> dict:
    """A submission entry for submissions.jsonl (rows already checked with `check_group`; `record`
    from `current_record` under the same rule)."""
    now = now or datetime.datetime.now(datetime.UTC)
    first = rows[0]
    gid = group_id(first)
    facts = sorted((run_facts(r) for r in rows), key=lambda f: f["seed"])
    return {
        "schema_version": ENTRY_VERSION, "kind": "submission",
        "submission_id": f"{now:%Y%m%d-%H%M%S}-{first['optimizer']}-{gid}", "date": now.isoformat(timespec="seconds"),
        "track": first["track"], "hardware": first["hardware"], "optimizer": first["optimizer"], "group": gid,
        "key": key_values(first), "target": float(first["target"]), "scipy": scipy.__version__,
        **decide(facts, float(first["target"]), schedule_steps(first["hparams"]), record, rule, confidence, accept_contended),
    }


# ---- the legacy rule (entries without a `rule` field) ---------------------------------------------


def _legacy_record_candidate(entry: dict) -> bool:
    return bool(entry["evidence"]) and entry["n_reached"] == entry["n"] and (entry.get("time_to_target_s") or {}).get("mean") is not None


def legacy_current_record(entries: Iterable[dict], track: str, hardware: str, exclude: tuple | None = None) -> dict | None:
    """The record as the legacy rule saw it: the fastest mean time to target among current submissions
    with evidence whose every run reached the target (for verifying entries without a `rule`)."""
    candidates = [e for e in current_submissions(entries).values()
                  if e["track"] == track and e["hardware"] == hardware and entry_setting(e) != exclude
                  and "rule" not in e and _legacy_record_candidate(e)]
    return min(candidates, key=lambda e: e["time_to_target_s"]["mean"], default=None)


def decide_legacy(facts: list[dict], target: float, record: dict | None, alpha: float = stats.ALPHA,
           confidence: float = stats.CONFIDENCE, accept_contended: bool = False) -> dict:
    """The legacy decision (entries without a `rule` field), unchanged so that `verify` recomputes
    those entries as they were decided: the target test on the final losses, then a Welch test of the
    mean time to the first evaluation at the target, over the runs that reached it."""
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


def describe(entry: dict) -> str:
    """The decision in a few human-readable lines."""
    def num(x, spec=".4f", missing="n/a"):
        return stats.fmt(x, spec, missing)

    loss = entry["final_val_loss"]
    seeds = ", ".join(str(r["seed"]) for r in entry["runs"])
    legacy = "rule" not in entry
    lines = [
        f"submission {entry['submission_id']}: {entry['optimizer']} on {entry['track']} ({entry['hardware']}), "
        f"group {entry['group']}, {entry['n']} runs (seeds {seeds})"
        + (", decided under the legacy first-crossing rule" if legacy else f", rule {entry['rule']}"),
        f"  final val loss  mean {num(loss['mean'])}  sd {num(loss['sd'])}  95% CI t [{num(loss['ci_t'][0])}, {num(loss['ci_t'][1])}]"
        f"  bootstrap [{num(loss['ci_bootstrap'][0])}, {num(loss['ci_bootstrap'][1])}]",
    ]
    test, rec = entry["target_test"], entry["record_test"]
    if legacy:
        time = entry["time_to_target_s"]
        lines.append(f"  time to target  mean {num(time['mean'], '.2f')} s  95% CI t [{num(time['ci_t'][0], '.2f')}, "
                     f"{num(time['ci_t'][1], '.2f')}]  ({entry['n_reached']}/{entry['n']} reached {entry['target']}, "
                     f"{entry['n_diverged']} diverged)")
    else:
        train, fc = entry["train_time_s"], entry["first_crossing"]
        lines.append(f"  schedule        T = {entry['steps']} steps; train time of the whole runs mean {num(train['mean'], '.2f')} s"
                     f"  95% CI t [{num(train['ci_t'][0], '.2f')}, {num(train['ci_t'][1], '.2f')}]  ({entry['n_diverged']} diverged)")
        lines.append(f"  first crossing  (AlgoPerf median, a miss = ∞; not judged) {num(fc['median_time_s'], '.2f', '∞')} s, "
                     f"step {num(fc['median_steps'], '.0f', '∞')} ({fc['n_reached']}/{entry['n']} reached {entry['target']})")
    if legacy or entry["rule"] == "time":
        alpha = entry["alpha"] if legacy else entry["rule_params"]["alpha"]
        lines.append(f"  target test     mean < {entry['target']}: t = {num(test['statistic'], '.3g')}, "
                     f"p = {num(test['p'], '.3g')} (needs p < {alpha})")
    else:
        lines.append(f"  target rule     (target - mean) x sqrt(n) = {num(test['margin'])} (needs >= {test['threshold']}; "
                     f"z = {num(test['z'], '.2f')} at fixed sigma {entry['rule_params']['sigma']}, p = {num(test['p'], '.2g')})")
    if not rec["against"]:
        lines.append("  record test     no earlier record on this track and hardware")
    elif legacy:
        lines.append(f"  record test     vs {rec['against']} ({rec['optimizer']}, {num(rec['reference_mean_s'], '.2f')} s to target): "
                     f"Welch t = {num(rec['statistic'], '.3g')}, p = {num(rec['p'], '.3g')}")
    elif entry["rule"] == "time":
        lines.append(f"  record test     vs {rec['against']} ({rec['optimizer']}, {num(rec['reference_train_time_s'], '.2f')} s per run): "
                     f"Welch t = {num(rec['statistic'], '.3g')}, p = {num(rec['p'], '.3g')}")
    else:
        lines.append(f"  record test     vs {rec['against']} ({rec['optimizer']}, T = {rec['reference_steps']}, mean loss "
                     f"{num(rec['reference_mean_loss'])}): pairwise margin {num(rec['margin'])} (needs >= {rec['threshold']})")
    verdict = "evidence ✓" if entry["evidence"] else "evidence ✗"
    verdict += ", NEW RECORD" if entry["new_record"] else ""
    verdict += f" ({entry['accepted_contended']} contended runs accepted)" if entry.get("accepted_contended") else ""
    lines.append(f"  decision        {verdict}")
    lines += [f"    - {r}" for r in entry["reasons"]]
    for test_name, n in entry["runs_needed"].items():
        if n is not None:
            lines.append(f"  more runs       about {n} runs in total (+{max(n - entry['n'], 0)}) for the {test_name} test at 80% power")
    return "\n".join(lines)
