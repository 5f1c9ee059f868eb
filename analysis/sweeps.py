"""Searches made of many run.py runs: hyperparameter sweeps (grid or random) and the search for
the shortest schedule that meets the target. Every run lands in the records table; each search
appends one entry to records/sweeps.jsonl with its trials, its winner and its tuning budget.

A search is resumable: its trials are a deterministic function of its arguments, and runs that
the table already holds (same configuration and seed) are reused instead of rerun. Its
sweep_id is a hash of those arguments, so rerunning the same command completes the same search
and its latest entry replaces the earlier ones when budgets are added up.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from analysis import stats
from analysis.launch import Launcher, Runner, ensure_many, ensure_runs
from analysis.records import append_entry, sweeps_path
from analysis.submissions import jsonable
from nanogpt.errors import UserError
from nanogpt.recording import ENTRY_VERSION, group_id
from nanogpt.runspec import RunSpec, resolve

Say = Callable[[str], None]


@dataclass(frozen=True)
class Dimension:
    """One random-search range: uniform or log-uniform between lo and hi, or a choice of values."""

    name: str
    kind: str  # "uniform" | "log" | "choice"
    lo: float = 0.0
    hi: float = 0.0
    choices: tuple[str, ...] = ()


def _split(item: str, flag: str) -> tuple[str, str]:
    name, sep, spec = item.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise UserError(f"{flag} {item!r}: expected NAME=SPEC, e.g. {flag} lr=0.01,0.02")
    return name.strip(), spec.strip()


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`--grid lr=0.01,0.02 --grid weight_decay=0,0.01` -> {"lr": ["0.01", "0.02"], ...}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, spec = _split(item, "--grid")
        if name in grid:
            raise UserError(f"--grid {name}: given twice; list all its values in one --grid {name}=a,b,c")
        values = [v.strip() for v in spec.split(",")]
        if any(not v for v in values) or len(set(values)) != len(values):
            raise UserError(f"--grid {item!r}: values must be non-empty and distinct")
        grid[name] = values
    return grid


def parse_random(items: list[str]) -> list[Dimension]:
    """`lr=log:1e-3:1e-1` (log-uniform), `momentum=0.85:0.99` (uniform), `orthogonalizer=choice:ns5,polar_express`."""
    dims = []
    for item in items:
        name, spec = _split(item, "--random")
        if name in {d.name for d in dims}:
            raise UserError(f"--random {name}: given twice")
        kind, _, rest = spec.partition(":")
        if kind == "choice":
            choices = tuple(v.strip() for v in rest.split(",") if v.strip())
            if not choices:
                raise UserError(f"--random {item!r}: choice needs values, e.g. {name}=choice:a,b")
            dims.append(Dimension(name, "choice", choices=choices))
            continue
        parts = rest.split(":") if kind == "log" else spec.split(":")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise UserError(f"--random {item!r}: expected {name}=LO:HI, {name}=log:LO:HI or {name}=choice:A,B") from None
        if not lo < hi or (kind == "log" and lo <= 0):
            raise UserError(f"--random {item!r}: need LO < HI{' and LO > 0 for log' if kind == 'log' else ''}")
        dims.append(Dimension(name, "log" if kind == "log" else "uniform", lo, hi))
    return dims


def grid_trials(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def random_trials(dims: list[Dimension], n: int, seed: int, defaults: dict) -> list[dict[str, str]]:
    """n deterministic draws (the same seed gives the same trials, which is what makes resuming
    work); integer hyperparameters are rounded, floats kept to 4 significant digits."""
    if n < 1:
        raise UserError(f"--trials {n}: must be at least 1")
    for d in dims:
        if d.name not in defaults:
            raise UserError(f"--random {d.name}: unknown hyperparameter; valid keys: {', '.join(sorted(defaults))}")
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        trial = {}
        for d in dims:
            if d.kind == "choice":
                trial[d.name] = d.choices[int(rng.integers(len(d.choices)))]
                continue
            u = rng.uniform()
            value = math.exp(math.log(d.lo) + u * (math.log(d.hi) - math.log(d.lo))) if d.kind == "log" else d.lo + u * (d.hi - d.lo)
            is_int = isinstance(defaults[d.name], int) and not isinstance(defaults[d.name], bool)
            trial[d.name] = str(round(value)) if is_int else f"{value:.4g}"
        trials.append(trial)
    return trials


def sweep_id(description: dict) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:10]


def summarize_trial(overrides: dict, spec: RunSpec, rows: list[dict]) -> dict:
    ok = [r["final_val_loss"] for r in rows if r["status"] == "ok"]
    reached = [r["time_to_target_s"] for r in rows if r["reached_target"]]
    return jsonable({
        "overrides": overrides, "group": group_id(spec.key_values()), "run_ids": [r["run_id"] for r in rows],
        "seeds": [int(r["seed"]) for r in rows], "n": len(rows), "n_reached": len(reached),
        "n_diverged": sum(r["status"] == "diverged" for r in rows),
        "steps": int(spec.hparams["steps"]),
        "mean_final_val_loss": float(np.mean(ok)) if ok else None,
        "mean_train_time_s": float(np.mean([float(r["train_time_s"]) for r in rows if r["status"] == "ok"])) if ok else None,
        "mean_time_to_target_s": float(np.mean(reached)) if reached and len(reached) == len(rows) else None,
        "device_s": float(sum(float(r["train_time_s"]) * int(r["world_size"]) for r in rows)),
    })


def choose_winner(trials: list[dict], rule: str | None) -> dict | None:
    """The trial the rule ranks first, as it ranks submissions (analysis.submissions.current_record):
    among trials that meet the target (`passed`: the rule's test, or with one seed a final loss at or
    below the target), the lowest score (time: mean train time of the whole runs; steps: T), then
    the lowest mean final loss. Train times of trials with one schedule length are pooled: those
    trials did the same number of steps, so their time difference is the machine's noise and the
    loss decides between them (a limitation: a setting that changes a step's cost, ns_steps, is
    judged by its time only across schedule lengths, or by find_steps and submissions). If no trial
    meets the target: the lowest mean final loss among trials without a diverged run. Entries made
    before sweeps followed the rule (no `rule`) are checked against the first-crossing rule they used."""
    if rule is None:
        return _first_crossing_winner(trials)
    stable = [t for t in trials if t["n_diverged"] == 0 and t["mean_final_val_loss"] is not None]
    met = [t for t in stable if t["passed"]]
    if met:
        pooled = {s: float(np.mean([t["mean_train_time_s"] for t in met if t["steps"] == s])) for s in {t["steps"] for t in met}}
        score = (lambda t: t["steps"]) if rule == "steps" else (lambda t: pooled[t["steps"]])
        best = min(met, key=lambda t: (score(t), t["mean_final_val_loss"]))
        criterion = (f"{'shortest schedule' if rule == 'steps' else 'lowest train time'} meeting the target "
                     f"under the {rule} rule, then lowest final loss")
    elif stable:
        best = min(stable, key=lambda t: t["mean_final_val_loss"])
        criterion = "mean final val loss (no trial met the target)"
    else:
        return None
    return {"overrides": best["overrides"], "group": best["group"], "criterion": criterion}


def _first_crossing_winner(trials: list[dict]) -> dict | None:
    """The winner of a sweep entry recorded before the rules (fastest mean first crossing)."""
    timed = [t for t in trials if t["mean_time_to_target_s"] is not None]
    if timed:
        best = min(timed, key=lambda t: t["mean_time_to_target_s"])
        return {"overrides": best["overrides"], "group": best["group"], "criterion": "mean time to target"}
    stable = [t for t in trials if t["n_diverged"] == 0 and t["mean_final_val_loss"] is not None]
    if stable:
        best = min(stable, key=lambda t: t["mean_final_val_loss"])
        return {"overrides": best["overrides"], "group": best["group"], "criterion": "mean final val loss (no trial reached the target)"}
    return None


def budget(trials: list[dict], launched: int, cpu_s: float, wall_s: float) -> dict:
    """The tuning budget: trials, runs, and device-seconds of training (train time x processes,
    over every run of the search, reused or not); plus what this invocation itself spent."""
    return {"trials": len(trials), "runs": sum(t["n"] for t in trials), "device_s": round(sum(t["device_s"] for t in trials), 3),
            "launched_now": launched, "process_cpu_s_now": round(cpu_s, 1), "wall_s_now": round(wall_s, 1)}


def _entry(kind: str, sid: str, base: RunSpec, search: dict, seeds: list[int], trials: list[dict], winner: dict | None,
           spent: dict) -> dict:
    return {"schema_version": ENTRY_VERSION, "kind": kind, "sweep_id": sid,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "track": base.track.name, "hardware": base.track.hardware, "optimizer": base.optimizer.name, "cli": list(base.cli),
            "search": search, "seeds": seeds, "trials": trials, "winner": winner, "budget": spent}


def _variant(debug_model: bool, data_dir: str | None) -> dict:
    return {"debug_model": debug_model, "data_dir": data_dir}


def _shown(variant: dict) -> dict:
    """The unofficial-variant choices that were made (none for a real track: older sweep ids stay)."""
    return {k: v for k, v in variant.items() if v}


def run_sweep(track: str, optimizer: str, sets: list[str], steps: int | None, no_compile: bool, nproc: int,
              trials: list[dict[str, str]], search: dict, seeds: list[int], records_dir: str, runner: Runner | Launcher,
              say: Say = print, debug_model: bool = False, data_dir: str | None = None, rule_name: str | None = None) -> dict:
    """Run every trial for every seed (reusing recorded runs; the missing ones are launched
    together, so a launcher that runs jobs at once runs them all at once), then append the search's
    entry; its winner is the trial the track's rule (or `rule_name`) ranks first (choose_winner)."""
    from analysis.submissions import Rule
    if steps is not None and any("steps" in t for t in trials):
        raise UserError("--steps fixes the schedule length that the search varies; drop --steps")
    variant = _variant(debug_model, data_dir)
    specs = [resolve(track, optimizer, [*sets, *(f"{k}={v}" for k, v in t.items())], steps, no_compile, nproc, **variant) for t in trials]
    sid = sweep_id({"kind": "sweep", "track": track, "optimizer": optimizer, "sets": sets, "steps": steps, "no_compile": no_compile,
                    "nproc": nproc, "search": search, "seeds": seeds, **_shown(variant)} | ({"rule": rule_name} if rule_name else {}))
    rule = Rule.of_track(specs[0].track, rule_name)
    say(f"sweep {sid}: {len(trials)} trials x {len(seeds)} seeds of {optimizer} on {track}")
    start = time.monotonic()
    made = ensure_many([(spec, seeds, _show(t)) for t, spec in zip(trials, specs)], records_dir, runner)
    done = []
    for i, (overrides, spec, rows, launched) in enumerate(zip(trials, specs, made.rows, made.launched), start=1):
        t = judge_trial(summarize_trial(overrides, spec, rows), rows, spec.track.target, rule)
        done.append(t)
        say(f"  trial {i}/{len(trials)} {_show(overrides)}: {t['steps']} steps, final loss {stats.fmt(t['mean_final_val_loss'], '.4f')}, "
            f"train time {stats.fmt(t['mean_train_time_s'], '.1f')} s, {'meets' if t['passed'] else 'misses'} the target "
            f"under the {rule.name} rule{', reused' if not launched else ''}")
    winner = choose_winner(done, rule.name)
    base = resolve(track, optimizer, sets, steps, no_compile, nproc, **variant)
    entry = _entry("sweep", sid, base, search, seeds, done, winner, budget(done, sum(made.launched), made.cpu_s, time.monotonic() - start))
    entry["rule"] = rule.name
    append_entry(sweeps_path(records_dir), entry)
    return entry


def judge_trial(trial: dict, rows: list[dict], target: float, rule) -> dict:
    """Whether a trial's runs meet the target under `rule`, as a submission's test would (`time`:
    the one-sided t-test on the final losses gives p < alpha; `steps`: the fixed-sigma margin reaches
    the threshold), no run diverged. A single run of the time rule has no t-test: it meets the
    target when its final loss is at or below it (a sweep's one-seed trials; find_steps needs 2 seeds)."""
    from analysis.submissions import assess, run_facts

    a = assess([run_facts(r) for r in rows], target, rule, accept_contended=True)  # contention does not change a loss
    test = a["test"]
    passed = test["passed"]
    if rule.name == "time" and len(rows) == 1:
        passed = trial["mean_final_val_loss"] is not None and trial["mean_final_val_loss"] <= target
    extra = {"p": None if len(rows) < 2 else test["p"]} if rule.name == "time" else {"p": test["p"], "margin": test["margin"]}
    return jsonable({**trial, **extra, "passed": bool(trial["n_diverged"] == 0 and passed)})


def find_steps(track: str, optimizer: str, sets: list[str], no_compile: bool, nproc: int, seeds: list[int], records_dir: str,
               runner: Runner | Launcher, start: int, max_steps: int | None, tolerance: float, rule_name: str | None = None,
               say: Say = print, debug_model: bool = False, data_dir: str | None = None, growth: float = 2.0) -> dict:
    """The shortest schedule (--steps) that the rule admits (the track's, or `rule_name`): multiply
    (or divide) `start` by `growth` to bracket it, then narrow the bracket until it is within
    `tolerance` (a fraction of the step count), each probe placed by the rule's shortfall
    (next_probe). Assumes longer schedules do not end at a worse loss. The search's runs count in the
    tuning budget of the configuration it picks. Doubling is costly when the start is a good guess
    that just misses: the next probe is twice as long, where a growth of 1.25 probes a quarter further."""
    from analysis.submissions import Rule
    variant = _variant(debug_model, data_dir)
    base = resolve(track, optimizer, sets, start, no_compile, nproc, **variant)
    rule = Rule.of_track(base.track, rule_name)
    alpha = rule.alpha
    cap = max_steps or base.track.max_steps
    if not 1 <= start <= cap:
        raise UserError(f"--start {start}: must lie in [1, {cap}] (the track's step budget or --max-steps)")
    if len(seeds) < 2:
        raise UserError("--seeds: the target test needs at least 2 seeds per step count")
    if not growth > 1:
        raise UserError(f"--growth {growth}: must be above 1 (the factor between bracketing step counts)")
    search = {"start": start, "max_steps": cap, "tolerance": tolerance, "alpha": alpha}
    search |= {} if growth == 2 else {"growth": growth}  # (doubling searches keep their earlier sweep ids)
    sid = sweep_id({"kind": "steps", "track": track, "optimizer": optimizer, "sets": sets, "no_compile": no_compile, "nproc": nproc,
                    "search": search, "seeds": seeds, **_shown(variant)} | ({} if rule.name == "time" else {"rule": rule.params()}))
    search |= {"rule": rule.name, "rule_params": rule.params()}  # (the time rule's sweep ids stay those of earlier searches)
    say(f"step search {sid}: {optimizer} on {track}, {len(seeds)} seeds per step count, target {base.track.target}")
    t0, probes, shortfalls, spent = time.monotonic(), {}, {}, {"launched": 0, "cpu_s": 0.0}

    def probe(steps: int) -> bool:
        if steps not in probes:
            spec = resolve(track, optimizer, sets, steps, no_compile, nproc, **variant)
            made = ensure_runs(spec, seeds, records_dir, runner)  # its seeds together; the next step count depends on this one
            spent["launched"] += made.launched
            spent["cpu_s"] += made.cpu_s
            probes[steps] = judge_trial(summarize_trial({"steps": str(steps)}, spec, made.rows), made.rows, spec.track.target, rule)
            shortfalls[steps] = shortfall([r["final_val_loss"] if r["status"] == "ok" else None for r in made.rows],
                                         spec.track.target, rule)
            p = probes[steps]
            shown = f"p = {stats.fmt(p['p'], '.3g')}" if rule.name == "time" else f"margin = {stats.fmt(p['margin'], '.4f')}"
            say(f"  steps {steps}: mean final loss {stats.fmt(p['mean_final_val_loss'], '.4f')}, {shown} -> "
                f"{'meets' if p['passed'] else 'misses'} the target under the {rule.name} rule")
        return probes[steps]["passed"]

    def shrink(n: int) -> int:
        return min(n - 1, int(n / growth))

    lo, hi = 0, None
    if probe(start):
        hi = start
        while hi > 1 and probe(shrink(hi)):
            hi = shrink(hi)
        lo = shrink(hi)
    else:
        lo = start
        while lo < cap:
            nxt = min(max(lo + 1, math.ceil(lo * growth)), cap)
            if probe(nxt):
                hi = nxt
                break
            lo = nxt
    slow = 0  # probes in a row that did not halve the bracket: the second such is followed by a bisection
    while hi is not None and hi - lo > max(1, int(tolerance * hi)):
        width = hi - lo
        guess = (lo + hi) // 2 if slow >= 2 or lo == 0 else \
            next_probe(lo, hi, shortfalls[lo], shortfalls[hi], max(1, int(tolerance * hi)))
        if probe(guess):
            hi = guess
        else:
            lo = guess
        slow = 0 if hi - lo <= width / 2 else slow + 1
    trials = [probes[s] for s in sorted(probes)]
    winner = None if hi is None else {"overrides": {"steps": str(hi)}, "group": probes[hi]["group"],
                                      "criterion": f"shortest schedule meeting the target under the {rule.name} rule"
                                      + (f" (p < {alpha})" if rule.name == "time" else f" (margin >= {rule.threshold})")}
    entry = _entry("steps", sid, base, search, seeds, trials, winner,
                   budget(trials, spent["launched"], spent["cpu_s"], time.monotonic() - t0))
    append_entry(sweeps_path(records_dir), entry)
    return entry


def shortfall(losses: list, target: float, rule) -> float:
    """How far a step count's final losses are from meeting the rule, in loss units (at most 0 when
    they meet it): `time`, the one-sided upper confidence bound of the mean (the t-test's) minus the
    target; `steps`, (threshold - margin) / sqrt(n). Infinite when a run diverged or left no loss."""
    from scipy.stats import t as student

    x = np.asarray([np.nan if v is None else v for v in losses], dtype=float)
    if len(x) < 2 or not np.isfinite(x).all():
        return math.inf
    if rule.name == "time":
        return float(x.mean() + student.ppf(1 - rule.alpha, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)) - target)
    return float(rule.threshold / math.sqrt(len(x)) - (target - x.mean()))


def next_probe(lo: int, hi: int, short_lo: float, short_hi: float, tolerance_steps: int) -> int:
    """The next step count inside the bracket (lo misses, hi meets the rule): where the line through
    the two shortfalls crosses zero, less half the tolerance, kept at least half a tolerance from
    either end. The shortfall falls ever more slowly as T grows (convex), so that line crosses zero
    above the true crossing, and a probe half a tolerance below it usually closes the bracket in one
    or two probes where bisection takes four or five; a probe next to an end would close nothing
    (NorMuon, 2026-12-02: 302 after 301 missed by a hair). Bisection when a shortfall is not finite
    (a diverged run)."""
    if not (math.isfinite(short_lo) and math.isfinite(short_hi)) or short_lo <= short_hi:
        return (lo + hi) // 2
    crossing = lo + (hi - lo) * short_lo / (short_lo - short_hi)
    margin = min(math.ceil(tolerance_steps / 2), (hi - lo) // 2)
    return min(hi - max(1, margin), max(lo + max(1, margin), round(crossing - tolerance_steps / 2)))


def steps_winner(trials: list[dict]) -> int | None:
    """The shortest passing probe (what the bisection converges to), for verification."""
    passed = [int(t["overrides"]["steps"]) for t in trials if t["passed"]]
    return min(passed, default=None)


def submit_command(entry: dict, seeds: str = "0-4", rule: str | None = None) -> str | None:
    """The scripts/submit.py command line for a search's winner."""
    if entry["winner"] is None:
        return None
    cli, overrides = list(entry["cli"]), entry["winner"]["overrides"]
    if "steps" in overrides and "--steps" in cli:
        i = cli.index("--steps")
        del cli[i : i + 2]
    cli += [a for k, v in overrides.items() for a in (("--steps", v) if k == "steps" else ("--set", f"{k}={v}"))]
    return " ".join(["python scripts/submit.py", *cli, "--seeds", seeds, *(["--rule", rule] if rule else [])])


def _show(overrides: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in overrides.items()) or "(defaults)"

