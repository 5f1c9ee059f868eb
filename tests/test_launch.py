"""Launching runs: submitit jobs that run at once and land in one table, a failed job named with
its output files, the launcher flags, and the progress read from growing logs."""

import datetime
import os
import re
import sys

import pytest
from conftest import ROOT, load_script
from fake_runs import fake_run

from analysis import launch
from analysis.launch import Sequential, Submitit, ensure_many, make_launcher
from analysis.progress import Expected, LogFollower, Progress, duration
from analysis.records import read_table
from nanogpt.errors import UserError
from nanogpt.recording import Recording
from nanogpt.runlog import eval_line, train_line
from nanogpt.runspec import resolve

submit, sweep, verify = (load_script(n) for n in ("submit", "sweep", "verify"))
submitit = pytest.importorskip("submitit")

DEBUG = ["--optimizer", "adamw", "--debug-model", "--no-compile", "--steps", "3"]


def job_window(out_file) -> tuple[datetime.datetime, datetime.datetime]:
    """When a submitit job started and ended, from its own log lines."""
    stamps = [datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f")
              for m in re.finditer(r"^submitit INFO \((.+?)\) - (?:Starting|Job completed)", out_file.read_text(), re.M)]
    assert len(stamps) == 2, out_file.read_text()
    return stamps[0], stamps[1]


def test_submitit_local_runs_two_jobs_at_once_and_both_rows_land(tmp_path, capsys):
    d = tmp_path / "records"
    assert submit.main(["--records-dir", str(d), *DEBUG, "--seeds", "0,1", "--launcher", "submitit-local"]) == 1  # far from the target
    table = read_table(d)
    assert sorted(table["seed"]) == [0, 1] and table["run_id"].is_unique and set(table["status"]) == {"ok"}
    assert verify.main(["--records-dir", str(d)]) == 0  # every log verifies, the table is whole
    (a_start, a_end), (b_start, b_end) = (job_window(f) for f in sorted((d / "jobs").glob("*_0_log.out")))
    assert a_start < b_end and b_start < a_end  # the two jobs overlapped: they ran at once
    out = capsys.readouterr().out
    assert "submitted 2 local jobs" in out
    assert len(re.findall(r"^  \[seed [01]\] ok: final val loss \d\.\d{4}", out, re.M)) == 2  # the per-run result lines


FAKE_JOB = ("import sys; sys.path[:0] = [{root!r}, {tests!r}]; argv = sys.argv[1:]\n"
            "if argv[argv.index('--seed') + 1] == '1': print('boom: out of memory', file=sys.stderr); sys.exit(3)\n"
            "from fake_runs import fake_run; sys.exit(fake_run(argv))")


def test_a_failed_job_is_named_with_its_output_and_the_other_runs_still_count(tmp_path, monkeypatch):
    """Seed 1's job dies without a row; seed 0's job (a synthetic run) is recorded all the same."""
    code = FAKE_JOB.format(root=str(ROOT), tests=str(ROOT / "tests"))
    monkeypatch.setattr(launch, "run_command", lambda argv, nproc, save_checkpoint: [sys.executable, "-c", code, *argv])
    d = str(tmp_path / "records")
    launcher = Submitit("local", str(tmp_path / "jobs"), 1, False, {"timeout_min": 5}, say=None)
    spec = resolve("tiny-cpu", "muon", [], 60)
    with pytest.raises(UserError) as e:
        ensure_many([(spec, [0, 1], "")], d, launcher)
    message = str(e.value)
    (err,) = [f for f in (tmp_path / "jobs").glob("*_0_log.err") if "boom: out of memory" in f.read_text()]
    job_id = err.name.split("_")[0]
    assert f"seed 1: local job {job_id} (stdout {tmp_path / 'jobs' / f'{job_id}_0_log.out'}, stderr {err})" in message
    assert "job state" in message and "the 1 other runs launched now were recorded" in message and "rerun the same command" in message
    assert "seed 0" not in message
    assert list(read_table(d)["seed"]) == [0]
    calls = []  # rerunning resumes: seed 0 is reused, only seed 1 is launched
    with pytest.raises(UserError, match="seed 1: run.py"):
        ensure_many([(spec, [0, 1], "")], d, lambda argv: calls.append(argv) or 2)
    assert len(calls) == 1 and calls[0][calls[0].index("--seed") + 1] == "1"


def test_one_after_another_a_failure_stops_the_runs_after_it(tmp_path):
    calls = []

    def runner(argv):
        calls.append(argv)
        return 2 if "lr=0.01" in " ".join(argv) else fake_run(argv)

    spec = resolve("tiny-cpu", "muon", [], 60)
    failing = resolve("tiny-cpu", "muon", ["lr=0.01"], 60)
    with pytest.raises(UserError) as e:
        ensure_many([(spec, [0], "a"), (failing, [0, 1], "lr=0.01"), (spec, [1], "b")], str(tmp_path), runner)
    assert len(calls) == 2 and "lr=0.01 seed 0: run.py " in str(e.value) and "ended with exit status 2" in str(e.value)
    assert list(read_table(tmp_path)["seed"]) == [0]


def test_a_configuration_asked_twice_is_run_once(tmp_path):
    """Two random-search trials that draw the same values share their runs (no seed run twice)."""
    calls = []
    spec = resolve("tiny-cpu", "muon", ["lr=0.03"], 60)
    made = ensure_many([(spec, [0, 1], "x"), (spec, [1], "y")], str(tmp_path), lambda argv: calls.append(argv) or fake_run(argv))
    assert len(calls) == 2 and made.launched == [2, 0] and made.rows[1][0]["run_id"] == made.rows[0][1]["run_id"]


@pytest.mark.parametrize("extra, message", [
    (["--partition", "gpu"], "--partition applies to --launcher slurm only"),
    (["--launcher", "submitit-local", "--slurm-arg", "account=x"], "--slurm-arg applies to --launcher slurm only"),
    (["--gpus-per-node", "1"], "--gpus-per-node applies to the submitit launchers only"),
    (["--launcher", "slurm", "--slurm-arg", "account"], "--slurm-arg 'account': expected KEY=VALUE"),
    (["--launcher", "slurm", "--time", "0"], "--time 0: a job's time limit in minutes must be positive"),
])
def test_bad_launcher_flags_fail_before_any_run(tmp_path, capsys, extra, message):
    assert sweep.main(["--records-dir", str(tmp_path), "--grid", "lr=0.01,0.02", *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "records.csv").exists()


def test_launcher_flags_build_the_slurm_job(tmp_path, monkeypatch):
    args = sweep.parse_args(["--records-dir", str(tmp_path), "--grid", "lr=0.01", "--track", "gpt2-small", "--nproc", "8",
                             "--launcher", "slurm", "--partition", "h100", "--time", "30", "--slurm-arg", "account=proj",
                             "--slurm-arg=--qos=high"])
    launcher = make_launcher(args)
    assert isinstance(launcher, Submitit) and launcher.cluster == "slurm" and launcher.folder == str(tmp_path / "jobs")
    assert launcher.parameters == {"timeout_min": 30, "tasks_per_node": 1, "nodes": 1, "gpus_per_node": 8, "slurm_partition": "h100",
                                   "slurm_additional_parameters": {"account": "proj", "qos": "high"}}
    fake_slurm = tmp_path / "bin"
    fake_slurm.mkdir()
    (fake_slurm / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_slurm / "srun").chmod(0o755)
    with pytest.raises(UserError, match="--launcher slurm: .*srun.*login node"):
        launcher.executor()
    monkeypatch.setenv("PATH", f"{fake_slurm}:{os.environ['PATH']}")  # submitit checks that srun exists, nothing more here
    script = launcher.executor()._executor._make_submission_file_text("python run.py", "uid")
    for line in ["--partition=h100", "--time=30", "--gpus-per-node=8", "--ntasks-per-node=1", "--nodes=1", "--account=proj",
                 "--qos=high"]:
        assert f"#SBATCH {line}\n" in script
    assert launch.run_command(["--seed", "0"], 8, False)[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    cpu = make_launcher(sweep.parse_args(["--grid", "lr=0.01", "--launcher", "slurm", "--cpus-per-task", "2"]))
    assert cpu.parameters == {"timeout_min": 120, "tasks_per_node": 1, "nodes": 1, "cpus_per_task": 2, "slurm_additional_parameters": {}}
    local = make_launcher(sweep.parse_args(["--grid", "lr=0.01"]))
    assert isinstance(local, Sequential) and local.one_at_a_time  # the default: one run after another, here


# ---- progress ----------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_follows_a_growing_log_step_loss_and_etas(tmp_path):
    spec = resolve("tiny-cpu", "muon", ["lr=0.03"], 100)
    other = resolve("tiny-cpu", "muon", ["lr=0.01"], 100)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "older-run.txt").write_text("a log that was there before\n")
    lines, clock = [], Clock()
    runs = [Expected("lr=0.03 seed 0", spec.key(), 0, 100), Expected("lr=0.01 seed 0", other.key(), 0, 100)]
    progress = Progress(tmp_path, runs, slots=1, say=lines.append, every=10, clock=clock)
    env = {"python": "3", "torch": "fake", "cuda": None, "device": "fake-cpu", "world_size": 1}
    rec = Recording(spec, tmp_path, 0, env, flops_per_token=1000, diverge_at=8.0)
    progress.poll()
    assert lines == []  # the log exists, no training line yet
    rec.line(eval_line(0, 100, 5.0, 0.0))
    for step in range(1, 21):
        rec.line(train_line(step, 100, 5.0 - step / 100, step * 0.5))  # 0.5 s a step
    clock.now = 10
    progress.poll()
    # 80 steps left at 0.5 s; the job: that, plus 100 steps of the run not started yet at the same pace, one at a time
    assert lines == ["  [lr=0.03 seed 0] step 20/100  train loss 4.8000  ETA 40s  | job: 0/2 runs done, ETA 1m30s"]
    rec.line(train_line(21, 100, 4.79, 10.5))
    clock.now = 15
    progress.poll()
    assert len(lines) == 1  # at most one update every 10 s
    clock.now = 20
    progress.poll()
    progress.poll()
    assert len(lines) == 2 and lines[1].startswith("  [lr=0.03 seed 0] step 21/100  train loss 4.7900  ETA 40s")
    shown = []
    many = Progress(tmp_path, runs * 4, slots=8, say=shown.append, every=10, clock=clock)
    many.matched = {i: progress.matched[0] for i in range(8)}
    many.poll()
    assert len(shown) == 8 and many.next_at == clock.now + 20  # 8 runs moved: the next update in 20 s, not 10
    for step in range(22, 101):
        rec.line(train_line(step, 100, 4.0, step * 0.5))
    rec.line(eval_line(100, 100, 4.0, 50.0))
    rec.finish("ok", {})
    progress.poll()  # a result is shown at once
    assert lines[2] == f"  [lr=0.03 seed 0] ok: final val loss 4.0000, train time 50s (1/2 runs done)  log: {rec.path}"
    assert progress.job_eta_s() == pytest.approx(50.0)  # the other run: 100 steps at 0.5 s


def test_log_follower_reads_partial_lines_and_skips_the_code(tmp_path):
    spec = resolve("tiny-cpu", "muon", [], 60)
    env = {"python": "3", "torch": "fake", "cuda": None, "device": "fake-cpu", "world_size": 1}
    rec = Recording(spec, tmp_path, 3, env, flops_per_token=1000, diverge_at=8.0)
    for step in range(1, 4):
        rec.line(train_line(step, 60, 4.0 + step, step * 2.0))
    text = rec.path.read_text()
    path = tmp_path / "growing.txt"
    follower = LogFollower(path)
    follower.read()  # not created yet
    cut = text.index("train_loss:7") + 5  # in the middle of the last training line
    path.write_text(text[:cut])
    follower.read()
    assert follower.identity() == (spec.key(), 3) and follower.step == 2 and follower.loss == 6.0
    with open(path, "a") as f:
        f.write(text[cut:])
    follower.read()
    assert (follower.step, follower.total, follower.loss, follower.eta_s()) == (3, 60, 7.0, pytest.approx(114.0))
    assert follower.result is None


def test_job_eta_spreads_runs_over_the_slots():
    progress = Progress("/nonexistent", [Expected(f"s{i}", ("k",), i, 100) for i in range(4)], slots=4, say=print)
    follower = LogFollower(ROOT / "nonexistent.txt", step=50, total=100, train_ms=50_000.0)
    progress.matched[0] = follower
    assert progress.job_eta_s() == pytest.approx(100.0)  # four at once: the longest, a run not started (100 steps x 1 s)
    progress.slots = 1
    assert progress.job_eta_s() == pytest.approx(50 + 3 * 100)  # one after another: the sum
    assert [duration(s) for s in (None, 5, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]


@pytest.mark.parametrize("chosen", [None, "mine"])
def test_jobs_share_torch_compiles_cache_in_the_jobs_folder_unless_one_is_chosen(tmp_path, monkeypatch, chosen):
    """A job on a fresh node would compile the model anew; the launcher points every job at one
    cache in the (shared) jobs folder, and leaves a cache the user chose alone."""
    if chosen:
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / chosen))
    else:
        monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    show = "import os; print('cache=' + os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'unset'))"
    monkeypatch.setattr(launch, "run_command", lambda argv, nproc, save_checkpoint: [sys.executable, "-c", show])
    launcher = Submitit("local", str(tmp_path / "jobs"), 1, False, {"timeout_min": 5}, say=None)
    with pytest.raises(UserError):  # the job records no run
        ensure_many([(resolve("tiny-cpu", "muon", [], 60), [0], "")], str(tmp_path / "records"), launcher)
    (out,) = (tmp_path / "jobs").glob("*_0_log.out")
    expected = tmp_path / chosen if chosen else (tmp_path / "jobs").resolve() / launch.INDUCTOR_CACHE
    assert f"cache={expected}" in out.read_text()
