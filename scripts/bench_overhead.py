"""Where a run's wall time goes outside training: start-up, configuration and data, compilation
warmup, machine figure, evaluation, the step loop's bookkeeping, recording, leaderboard, exit.

    python scripts/bench_overhead.py                                  # `python run.py`, 2 repeats
    python scripts/bench_overhead.py --sweep --steps 100             # a 3-run sweep (sweep.py --grid lr=...)
    python scripts/bench_overhead.py --root /tmp/before --out b.json  # the same for another checkout

Each run is a fresh process of run.py from `--root`, with run.py's phase functions wrapped by
name (spec_from_args, warmup_and_reset, machine_figure, evaluate, timed_loop, Recording.finish,
print_board), so
the same script measures older checkouts too. A sweep runs `scripts/sweep.py` of that checkout in
this process, its runner launching the same probes. A measurement, not a test: run it alone on the
machine (any other load slows torch steps 5-40x) and compare medians. Takes about 2.5 min per
tiny-cpu run on a 2-core VM.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ["start-up and exit", "import run", "configuration", "data and model", "warmup (compilation)", "machine figure",
          "evaluation", "training (timed)", "loop bookkeeping", "recording", "leaderboard"]


def probe(root: Path, out: Path, argv: list[str]) -> int:
    """In a fresh process: import run.py from `root`, wrap its phases, run it, write the phases."""
    t_start = time.perf_counter()
    sys.path.insert(0, str(root))
    os.chdir(root)
    import run  # noqa: PLC0415 (the checkout under test)

    spent = {"import run": time.perf_counter() - t_start, "evaluation": 0.0}
    outcome = {}

    def timed(name: str, fn, keep=None):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            if keep is not None:
                keep(result)
            return result

        return wrapper

    run.spec_from_args = timed("configuration", run.spec_from_args)
    run.warmup_and_reset = timed("warmup (compilation)", run.warmup_and_reset)
    run.machine_figure = timed("machine figure", run.machine_figure, keep=lambda ms: outcome.setdefault("calib_ms", ms))
    run.evaluate = timed("evaluation", run.evaluate)  # the timed loop's evaluations (the warmup's probe is in the warmup)
    run.timed_loop = timed("timed loop", run.timed_loop, keep=lambda o: outcome.setdefault("train_time_s", o.train_time_s))
    run.Recording.finish = timed("recording", run.Recording.finish)
    run.print_board = timed("leaderboard", run.print_board)
    t_main = time.perf_counter()
    code = run.main(argv)
    main_s = time.perf_counter() - t_main
    train_s = outcome.get("train_time_s", 0.0)
    loop_s = spent.get("timed loop", 0.0)
    named = ("configuration", "warmup (compilation)", "machine figure", "recording", "leaderboard")
    phases = {"import run": spent["import run"], **{p: spent.get(p, 0.0) for p in named}, "evaluation": spent["evaluation"],
              "training (timed)": train_s, "loop bookkeeping": loop_s - spent["evaluation"] - train_s,
              # everything else main did: reading the data, building and wrapping the model, the log's header
              "data and model": main_s - loop_s - sum(spent.get(p, 0.0) for p in named)}
    out.write_text(json.dumps({"code": code, "phases": phases, "calib_ms": outcome.get("calib_ms"),
                               "in_process_s": time.perf_counter() - t_start}))
    return code


def measured_run(root: Path, argv: list[str]) -> dict:
    """One probed run.py process: its phases, and the start-up and exit the process spent around them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "phases.json"
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", str(out), "--root", str(root), "--", *argv],
                              cwd=root).returncode
        wall = time.perf_counter() - t0
        if not out.exists():
            raise SystemExit(f"error: the probed run exited with status {code} before reporting its phases")
        result = json.loads(out.read_text())
    phases = result["phases"]
    phases["start-up and exit"] = wall - result["in_process_s"]
    return {"code": code, "wall_s": wall, "phases": phases, "calib_ms": result["calib_ms"]}


def load_module(root: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", root / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(runs: list[dict]) -> dict:
    """Median seconds per phase over the runs, and the median wall time."""
    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "phases": {p: statistics.median(r["phases"].get(p, 0.0) for r in runs) for p in PHASES}}


def show(title: str, s: dict) -> str:
    lines = [f"{title}: wall {s['wall_s']:.1f} s (median)", f"  {'phase':30s} {'s':>8s} {'share':>7s}"]
    for p in PHASES:
        lines.append(f"  {p:30s} {s['phases'][p]:8.1f} {100 * s['phases'][p] / s['wall_s']:6.1f}%")
    outside = s["wall_s"] - s["phases"]["training (timed)"]
    lines.append(f"  {'outside training':30s} {outside:8.1f} {100 * outside / s['wall_s']:6.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Break a run's (or a sweep's) wall time down by phase (about 2.5 minutes per tiny-cpu run).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="the checkout to measure")
    p.add_argument("--repeats", type=int, default=2, help="runs of `python run.py` (medians are shown)")
    p.add_argument("--sweep", action="store_true", help="measure a 3-run sweep (lr x3, seed 0) instead")
    p.add_argument("--steps", type=int, default=None, help="schedule length (default: the track's)")
    p.add_argument("--out", help="write the measurements as JSON here")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    root = Path(args.root).resolve()
    run_args = rest[1:] if rest[:1] == ["--"] else rest
    if args.probe:
        return probe(root, Path(args.probe), run_args)
    steps = ["--steps", str(args.steps)] if args.steps else []
    with tempfile.TemporaryDirectory() as records:
        if args.sweep:
            runs = []

            def runner(run_argv: list[str]) -> int:
                runs.append(measured_run(root, run_argv))
                return runs[-1]["code"]

            sys.path.insert(0, str(root))  # the checkout's own packages (analysis, nanogpt), not this one's
            sweep = load_module(root, "sweep")
            t0 = time.perf_counter()
            sweep.main(["--grid", "lr=0.01,0.02,0.04", "--seeds", "0", *steps, "--records-dir", records], runner)
            wall = time.perf_counter() - t0
            result = {"kind": "sweep", "wall_s": wall, "runs": runs, "per_run": summary(runs),
                      "sweep_outside_runs_s": wall - sum(r["wall_s"] for r in runs)}
            print(show(f"3-run sweep, per run ({root})", result["per_run"]))
            print(f"sweep: wall {wall:.1f} s, training {sum(r['phases']['training (timed)'] for r in runs):.1f} s, "
                  f"outside the runs {result['sweep_outside_runs_s']:.1f} s; per run: "
                  + ", ".join(f"warmup {r['phases']['warmup (compilation)']:.1f} s" for r in runs))
        else:
            runs = [measured_run(root, [*steps, "--records-dir", records]) for _ in range(args.repeats)]
            result = {"kind": "run", "runs": runs, **summary(runs)}
            print(show(f"python run.py ({root})", result))
    result |= {"root": str(root), "python": sys.version.split()[0], "cpu": cpu_model()}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
