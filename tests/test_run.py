"""run.py end to end: a short run writes a log and a row; bad input fails in one line; a
diverging or interrupted run is recorded as such and loses nothing."""

import contextlib
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import run
from analysis.records import read_table
from nanogpt import tracks
from nanogpt.data import write_shard
from nanogpt.model import GPT

SHORT = ["--no-compile", "--steps", "6", "--quiet"]


@pytest.fixture(autouse=True)
def small_validation(fast_track):
    """Every in-process run here uses tiny-cpu with 8 validation windows and one warmup step (none of
    these tests is about either; tests/test_harness_promises.py is)."""
# The runs in a subprocess (signals, pipes) use the tiny debug model: they test the process, not the model.
DEBUG = ["--no-compile", "--debug-model"]


@pytest.fixture(autouse=True)
def _fast(fast_track):
    """None of these tests is about the validation size or the warmup (test_harness_promises.py is)."""


def test_short_run_records_a_row_and_a_log(tmp_path):
    assert run.main([*SHORT, "--records-dir", str(tmp_path), "--seed", "3"]) == 0
    df = read_table(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.track, row.optimizer, row.seed, row.status, row.steps) == ("tiny-cpu", "muon", 3, "ok", 6)
    assert row.tokens == 6 * tracks.get_track("tiny-cpu").tokens_per_step
    log = (tmp_path / row.log).read_text()
    assert "==== optimizer muon.py ====" in log and "==== run.py ====" in log
    training = log.split("==== training ====")[1].split("==== result ====")[0]
    val_lines = [line for line in training.splitlines() if "val_loss:" in line]
    # the head starts at zero: uniform logits over the 257 byte tokens, a loss of exactly ln 257
    assert val_lines[0] == f"step:0/6 val_loss:{math.log(257):.4f} train_time:0ms step_avg:0.00ms"
    assert val_lines[-1].startswith("step:6/6 val_loss:")
    assert float(val_lines[-1].split("val_loss:")[1].split()[0]) == pytest.approx(row.final_val_loss, abs=1e-4)
    assert row.final_val_loss < math.log(257)  # it learned something in 6 steps: better than the uniform guess


def test_seed_determines_the_run(tmp_path):
    for seed in (1, 1, 2):
        assert run.main([*SHORT, "--records-dir", str(tmp_path), "--seed", str(seed), "--optimizer", "adamw"]) == 0
    losses = read_table(tmp_path)["final_val_loss"].tolist()
    assert losses[0] == losses[1] != losses[2]


def test_reaching_the_target_is_recorded(tmp_path, monkeypatch):
    easy = tracks.TRACKS["tiny-cpu"].with_overrides(target=5.0, eval_every=2)
    monkeypatch.setitem(tracks.TRACKS, "tiny-cpu", easy)
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    assert row.reached_target and row.steps_to_target == 2
    assert row.tokens_to_target == 2 * easy.tokens_per_step
    assert 0 < row.time_to_target_s < row.train_time_s


@pytest.mark.parametrize(
    "args, message",
    [
        (["--track", "nope"], "unknown track 'nope'; valid tracks: .*tiny-cpu"),
        (["--optimizer", "nope"], "unknown optimizer 'nope'; valid:"),
        (["--set", "lrr=1"], "unknown hyperparameter"),
        (["--set", "lr=abc"], "expected float"),
        (["--steps", "0"], "must be a positive"),
        (["--optimizer", "missing_file.py"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, capsys, args, message):
    assert run.main([*SHORT, "--records-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err)
    assert not (tmp_path / "records.csv").exists()


def test_corrupt_shard_names_the_file(tmp_path, monkeypatch, capsys):
    write_shard(tmp_path / "t_000.bin", np.arange(5000) % 200)
    (tmp_path / "t_000.bin").write_bytes((tmp_path / "t_000.bin").read_bytes()[:-7])
    broken = tracks.TRACKS["tiny-cpu"].with_overrides(train_files=str(tmp_path / "t_*.bin"))
    monkeypatch.setitem(tracks.TRACKS, "tiny-cpu", broken)
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 2
    assert "t_000.bin is corrupt" in capsys.readouterr().err


def test_malformed_records_table_fails_before_training(tmp_path, capsys):
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    with open(tmp_path / "records.csv", "a") as f:
        f.write("only,three,fields\n")
    capsys.readouterr()
    assert run.main(["--no-compile", "--steps", "2", "--records-dir", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "records.csv:3: malformed row" in out.err
    assert "step:" not in out.out  # refused before any training step
    assert len((tmp_path / "records.csv").read_text().splitlines()) == 3  # nothing appended


def test_records_dir_that_is_a_file_fails_before_training(tmp_path, capsys):
    not_a_folder = tmp_path / "records"
    not_a_folder.write_text("")
    assert run.main([*SHORT, "--records-dir", str(not_a_folder)]) == 2
    out = capsys.readouterr()
    assert "is a file, not a folder" in out.err and "step:" not in out.out


POISON_OPTIMIZER = """
import torch

DEFAULTS = {"lr": 0.1}


class Poison(torch.optim.Optimizer):
    # SGD that writes NaN into the weights on its third step: a deterministic divergence, whatever the platform.
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})
        self.steps = 0

    @torch.no_grad()
    def step(self):
        self.steps += 1
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])
                if self.steps == 3:
                    p.fill_(float("nan"))


def build(params, hp, model):
    return [Poison([p for ps in params.values() for p in ps], hp["lr"])]
"""


def test_divergence_stops_and_is_recorded(tmp_path, capsys):
    poison = tmp_path / "poison.py"
    poison.write_text(POISON_OPTIMIZER)
    code = run.main([*SHORT, "--records-dir", str(tmp_path), "--optimizer", str(poison)])
    assert code == 1
    assert "diverged" in capsys.readouterr().err
    row = read_table(tmp_path).iloc[0]
    assert row.status == "diverged" and row.steps == 4 and not row.reached_target  # the first NaN loss comes after the poisoned step


def test_list_shows_tracks_and_optimizers(capsys):
    assert run.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-cpu" in out and "muon: " in out and "lr=" in out


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_record_interrupted(tmp_path, root, sig, code):
    """SIGINT (Ctrl-C) or SIGTERM (timeout, Slurm, torchrun) after the first progress line: the run
    stops, records 'interrupted' with its result section, exits 130 or 143."""
    def niced_with_ctrl_c():  # niced: on a busy machine this test must get to send the signal before the run ends;
        os.nice(19)           # Ctrl-C's default restored: a background job of a script (CI's `cmd &`) inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "run.py", *DEBUG, "--steps", "200", "--records-dir", str(tmp_path)], preexec_fn=niced_with_ctrl_c,
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:
        if line.startswith("  step "):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err
    row = read_table(tmp_path).iloc[0]
    assert row.status == "interrupted" and 0 < row.steps < 200
    assert "==== result ====" in (tmp_path / row.log).read_text()


def test_personal_runs_default_to_an_ignored_folder(root):
    assert run.parse_args([]).records_dir == str(tracks.PERSONAL_RUNS)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(tracks.PERSONAL_RUNS / "records.csv")], cwd=root)
    assert ignored.returncode == 0, "runs/ must be git-ignored: a user's runs never dirty the checkout"


def test_quiet_still_prints_the_result_and_the_log(tmp_path, capsys):
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (log,) = (tmp_path / "logs").glob("*.txt")
    assert "final val loss" in out and f"log: {log}" in out and "step:" not in out


def test_an_unreadable_official_board_never_fails_a_finished_run(tmp_path, monkeypatch, capsys):
    official = tmp_path / "official"
    official.mkdir()
    (official / "records.csv").write_text("not,a,records,table\n")
    monkeypatch.setattr(run, "OFFICIAL_RECORDS", official)
    assert run.main(["--no-compile", "--steps", "2", "--records-dir", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    assert "(leaderboard not shown: UserError:" in out and "records.csv:1: header" in out
    assert len((tmp_path / "mine" / "records.csv").read_text().splitlines()) == 2  # the run is recorded


def test_a_run_records_its_machine_and_contention_figures(tmp_path):
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    assert row.calib_ms > 0  # the machine figure: eager forward-backward of the track's model, after the warmup
    assert 0 < row.cpu_util < 1.5 and row.contended in (True, False)
    assert np.isnan(row.gpu_util) and np.isnan(row.gpu_other_procs)  # no GPU here


def test_a_run_beside_busy_processes_is_recorded_as_contended(tmp_path):
    """Two CPU-bound processes beside the run on this machine's cores: the timed steps wait for a
    CPU (pressure) or get less CPU than their threads could use, and the row says contended."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(max(2, os.cpu_count() or 1))]
    try:
        assert run.main(["--no-compile", "--steps", "12", "--quiet", "--records-dir", str(tmp_path)]) == 0
    finally:
        for h in hogs:
            h.kill()
    row = read_table(tmp_path).iloc[0]
    assert row.contended == True, (row.cpu_util, row.cpu_pressure, row.steal)  # noqa: E712


def test_output_piped_into_a_closed_reader_still_records_the_run(tmp_path, root):
    """`python run.py | head -1`: the pipe closes, the run keeps training and records its result."""
    proc = subprocess.Popen([sys.executable, "run.py", *DEBUG, "--steps", "30", "--records-dir", str(tmp_path)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    row = read_table(tmp_path).iloc[0]
    assert row.status == "ok" and row.steps == 30


def test_the_sigterm_handler_is_only_installed_while_training(tmp_path):
    """A process that called run.main (a test, a notebook) keeps its own SIGTERM behaviour: pools it
    forks later are terminated with SIGTERM and must not inherit an interrupting handler."""
    before = signal.getsignal(signal.SIGTERM)
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_machine_figure_is_the_fastest_timed_pass_after_untimed_ones(monkeypatch):
    """Noise only adds time: the figure is the fastest of the timed passes, and the untimed first
    passes (however fast) do not count. Each pass advances a scripted clock by its duration."""
    from nanogpt import contention

    durations = iter([0.001, 0.001] + [0.009, 0.005, 0.003, 0.004, 0.2, 0.006, 0.007])  # 2 untimed, then 7 timed (seconds)
    clock = {"now": 0.0}
    monkeypatch.setattr(contention.time, "perf_counter", lambda: clock["now"])
    model = GPT(tracks.debug_variant(tracks.get_track("tiny-cpu"), "cpu").model)
    forward = model.forward

    def timed_forward(*args, **kwargs):
        clock["now"] += next(durations)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", timed_forward)
    assert contention.machine_figure(model, 257, 1, 8, "cpu", contextlib.nullcontext) == 3.0
    assert all(p.grad is None for p in model.parameters())
