"""What the harness promises about a run, tested by behaviour through run.py (README "Timing rules"):

- only training steps are timed: a clock that jumps forward whenever evaluation runs leaves
  train_time unchanged, and the optimizer-step share counts the timed steps only;
- the untimed warmup is followed by a full reset (model, optimizers, data order): runs with 0 and
  with 3 warmup steps write the same losses;
- compilation is paid by the warmup: a compiled tiny-cpu run matches eager and its first timed
  step is not slower than the compilation it follows;
- the seed fixes the data, not only the weights;
- the logged validation loss is the loss of the final weights over the whole validation set,
  as an independent evaluation of the saved checkpoint shows;
- peak_mem_mb is the process's peak resident set on CPU (read from /proc, not from resource);
- the track's limits hold: no schedule beyond its step budget, and a finite train loss above its
  divergence threshold stops the run as diverged.

Each test changes the run only through the track (a small validation set, where that is not
what it tests) or through the clock; none reads the trainer's internals.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from pathlib import Path

import pytest
import torch

import run
from analysis.records import read_table
from analysis.verify import verify_records
from nanogpt import tracks, train
from nanogpt.checkpoint import load_checkpoint, save_checkpoint
from nanogpt.config import JUDGING_FIELDS
from nanogpt.data import TokenStream, validation_sequences
from nanogpt.errors import UserError
from nanogpt.model import GPT
from nanogpt.runlog import parse_log
from nanogpt.runspec import track_config

SHORT = ["--no-compile", "--steps", "6", "--quiet"]
LOSS = re.compile(r"^step:(\d+)/\d+ (train_loss|val_loss):(\S+) ")


def use_track(monkeypatch, **changes) -> tracks.Track:
    track = tracks.TRACKS["tiny-cpu"].with_overrides(**changes)
    monkeypatch.setitem(tracks.TRACKS, "tiny-cpu", track)
    return track


def only_row(records_dir: Path):
    table = read_table(records_dir)
    assert len(table) == 1 and table.iloc[0].status == "ok", table.to_dict("records")
    return table.iloc[0]


def losses(records_dir: Path) -> list[tuple[int, str, str]]:
    """(step, kind, loss as logged) of every training and evaluation line of the only run."""
    lines = (records_dir / only_row(records_dir).log).read_text().splitlines()
    return [(int(m[1]), m[2], m[3]) for m in map(LOSS.match, lines) if m]


class JumpingClock:
    """time.perf_counter plus an offset the test moves forward (a wall clock that 'spends' time)."""

    def __init__(self, monkeypatch):
        self.real, self.offset = time.perf_counter, 0.0
        monkeypatch.setattr(time, "perf_counter", self)

    def __call__(self) -> float:
        return self.real() + self.offset

    def spending(self, seconds: float, fn):
        def spend(*args, **kwargs):
            self.offset += seconds
            return fn(*args, **kwargs)

        return spend


# ---- timing -----------------------------------------------------------------------------------


def test_time_spent_evaluating_is_not_training_time(tmp_path, monkeypatch):
    """Every evaluation (the warmup's probe and the 4 of the timed loop) costs 1000 s of wall clock:
    none of it may reach train_time."""
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1, eval_every=2)
    clock = JumpingClock(monkeypatch)
    monkeypatch.setattr(run, "evaluate", clock.spending(1000.0, run.evaluate))
    monkeypatch.setattr(train, "evaluate", clock.spending(1000.0, train.evaluate))
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    assert clock.offset == 5 * 1000.0  # the evaluations did run
    row = only_row(tmp_path)
    assert 0 < row.train_time_s < 100, row.train_time_s
    assert [s for s, kind, _ in losses(tmp_path) if kind == "val_loss"] == [0, 2, 4, 6]


def test_the_optimizer_step_share_counts_the_timed_steps_only(tmp_path, monkeypatch):
    """Each optimizer step costs 100 s, warmup steps included: the 6 timed steps hold 600 s of
    optimizer time in about 600 s of train time, so the share is just under 1. A timer that kept
    the warmup's step would say 700 / 600."""
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1)
    clock = JumpingClock(monkeypatch)
    build = run.build_optimizers

    def slow_optimizers(*args, **kwargs):
        opts = build(*args, **kwargs)
        for o in opts:
            o.step = clock.spending(100.0, o.step)
        return opts

    monkeypatch.setattr(run, "build_optimizers", slow_optimizers)
    assert run.main([*SHORT, "--records-dir", str(tmp_path)]) == 0
    assert clock.offset == 7 * 100.0 * 2  # muon: 2 optimizers, 1 warmup + 6 timed steps
    row = only_row(tmp_path)
    assert 1200 <= row.train_time_s < 1300, row.train_time_s
    assert 0.95 < row.opt_step_share <= 1.0, row.opt_step_share


def test_warmup_steps_leave_no_trace_in_the_run(tmp_path, monkeypatch):
    """The untimed warmup trains on real batches, then resets the model, the optimizers (Muon's
    momentum; the auxiliary AdamW's moments and step counts) and the data order: 0 and 3 warmup
    steps give the same losses."""
    logged = []
    for warmup in (0, 3):
        use_track(monkeypatch, val_tokens=2048, warmup_steps=warmup)
        d = tmp_path / f"warmup{warmup}"
        assert run.main([*SHORT, "--optimizer", "muon", "--records-dir", str(d)]) == 0
        logged.append(losses(d))
    assert len(logged[0]) == 6 + 2
    assert logged[0] == logged[1]


# ---- the compiled path ------------------------------------------------------------------------


def test_compiled_tiny_cpu_matches_eager_and_compiles_during_the_warmup(tmp_path, monkeypatch):
    """tiny-cpu's default, torch.compile (inductor on CPU), with the track's own warmup: the same
    losses as eager up to kernel rounding, and the first timed step is an ordinary step (the
    compilation, seconds on 2 cores, happened in the untimed warmup)."""
    use_track(monkeypatch, val_tokens=2048)
    assert tracks.TRACKS["tiny-cpu"].compile and tracks.TRACKS["tiny-cpu"].warmup_steps >= 1
    argv = ["--steps", "4", "--quiet", "--optimizer", "adamw"]
    t0 = time.perf_counter()
    assert run.main([*argv, "--records-dir", str(tmp_path / "compiled")]) == 0
    compiled_wall = time.perf_counter() - t0
    assert run.main([*argv, "--no-compile", "--records-dir", str(tmp_path / "eager")]) == 0
    compiled, eager = losses(tmp_path / "compiled"), losses(tmp_path / "eager")
    assert [k[:2] for k in compiled] == [k[:2] for k in eager]
    worst = max(abs(float(a[2]) - float(b[2])) for a, b in zip(compiled, eager))
    assert worst < 2e-3, list(zip(compiled, eager))
    row = only_row(tmp_path / "compiled")
    assert "~" not in row.track and row.track == "tiny-cpu"
    train_ms = [int(m[1]) for m in re.finditer(r"train_loss:\S+ train_time:(\d+)ms",
                                               (tmp_path / "compiled" / row.log).read_text())]
    # the first timed step is an ordinary step: compiling (seconds, even from a warm inductor cache)
    # happened in the warmup; an eager warmup would leave it to this step
    steps_ms = [b - a for a, b in zip([0, *train_ms], train_ms)]
    assert steps_ms[0] < 3 * statistics.median(steps_ms[1:]) + 50, (steps_ms, compiled_wall)


# ---- seeds ------------------------------------------------------------------------------------


def test_the_seed_changes_the_data_not_only_the_weights(tmp_path, monkeypatch):
    """With the initial weights held fixed (torch's seed forced to 0), seeds 1 and 2 still train
    differently, and seed 1 twice identically: the seed reaches the data sampler."""
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1)
    seen = []
    real_seed = torch.manual_seed

    def fixed_seed(seed):
        seen.append(seed)
        return real_seed(0)

    monkeypatch.setattr(torch, "manual_seed", fixed_seed)
    logged = []
    for i, seed in enumerate((1, 1, 2)):
        d = tmp_path / str(i)
        assert run.main([*SHORT, "--seed", str(seed), "--records-dir", str(d)]) == 0
        logged.append(losses(d))
    assert {1, 2} <= set(seen)  # the trainer seeds torch through the patched function
    assert logged[0] == logged[1]
    steps = [[loss for _, kind, loss in lines if kind == "train_loss"] for lines in logged]
    assert steps[0][0] == steps[2][0] == f"{math.log(257):.4f}"  # the zero head's uniform logits on any batch
    assert steps[0][1:] != steps[2][1:]


# ---- evaluation and checkpoints ---------------------------------------------------------------


def independent_val_loss(model: GPT, track: tracks.Track) -> float:
    """Mean per-token cross-entropy over the track's validation windows, one window at a time,
    in float64 (not the trainer's batched evaluation)."""
    val = validation_sequences(TokenStream(track.resolve(track.val_files)), track.val_tokens, track.seq_len)
    assert val.shape == (track.val_tokens // track.seq_len, track.seq_len + 1)
    with torch.no_grad():
        per_window = [model(v[None, :-1], v[None, 1:]).double() for v in val]
    return torch.stack(per_window).mean().item()


def test_a_checkpoint_holds_the_final_weights_and_their_logged_validation_loss(tmp_path, monkeypatch):
    """--save-checkpoint: the checkpoint beside the log, its metadata, and the validation loss of
    its weights over the whole validation set (an evaluation independent of the trainer's) equals
    the logged final validation loss. Half the set, or the weights of another step, would not."""
    track = use_track(monkeypatch, val_tokens=8192, warmup_steps=1)
    assert run.main([*SHORT, "--seed", "4", "--optimizer", "adamw", "--save-checkpoint", "--records-dir", str(tmp_path)]) == 0
    row = only_row(tmp_path)
    assert row.checkpoint == f"logs/{row.run_id}.pt" and (tmp_path / row.checkpoint).is_file()
    ckpt = load_checkpoint(tmp_path / row.checkpoint)
    assert (ckpt.run_id, ckpt.track, ckpt.optimizer, ckpt.seed, ckpt.steps) == (row.run_id, "tiny-cpu", "adamw", 4, 6)
    assert ckpt.val_loss == pytest.approx(row.final_val_loss, abs=5e-5)  # the log prints 4 decimals
    assert ckpt.hparams == parse_log(tmp_path / row.log).config["hparams"]
    assert independent_val_loss(ckpt.model, track) == pytest.approx(row.final_val_loss, abs=6e-5)
    assert row.final_val_loss < math.log(257) - 0.3  # trained weights, not the initial ones (loss ln 257)


def test_without_the_flag_there_is_no_checkpoint(tmp_path, monkeypatch):
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1)
    assert run.main(["--no-compile", "--steps", "1", "--quiet", "--records-dir", str(tmp_path)]) == 0
    assert not list((tmp_path / "logs").glob("*.pt"))
    assert not isinstance(read_table(tmp_path).iloc[0].checkpoint, str) or not read_table(tmp_path).iloc[0].checkpoint


def test_checkpoint_round_trip_and_unreadable_files(tmp_path):
    track = tracks.get_track("gpt2-muon-2024")  # a non-default architecture must come back as it was
    cfg = tracks.debug_variant(track, "cpu").model
    torch.manual_seed(0)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # no zero-initialised tensor left
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model, track=track, run_id="r1", optimizer="muon", hparams={"lr": 0.1},
                           seed=3, steps=7, val_loss=2.5)
    ckpt = load_checkpoint(path)
    assert ckpt.model.cfg == cfg and not ckpt.model.training
    assert (ckpt.run_id, ckpt.track, ckpt.optimizer, ckpt.hparams, ckpt.seed, ckpt.steps, ckpt.val_loss) == (
        "r1", "gpt2-muon-2024", "muon", {"lr": 0.1}, 3, 7, 2.5)
    for (name, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(model.eval()(x, x), ckpt.model(x, x))
    assert not list(tmp_path.glob("sub/*.tmp"))  # written atomically
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)
    torch.save({"format_version": 99}, path)
    with pytest.raises(UserError, match="not a checkpoint of format version"):
        load_checkpoint(path)


def test_evaluate_covers_every_validation_window_in_any_batch_size():
    """train.evaluate against a window-by-window mean: 37 windows in batches of 8 (a short last batch)."""
    torch.manual_seed(0)
    cfg = tracks.get_track("tiny-cpu").model
    model = GPT(cfg)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)  # non-uniform predictions: every window's loss differs
    val = torch.randint(0, cfg.vocab_size, (37, 33))
    with torch.no_grad():
        reference = torch.stack([model(v[None, :-1], v[None, 1:]).double() for v in val]).mean().item()
    for batch in (8, 37, 64):
        assert train.evaluate(train.Workload.local(model), val, batch) == pytest.approx(reference, rel=1e-6)


# ---- the frozen track, and a run's measured figures ------------------------------------------


def test_tiny_cpu_is_the_track_of_its_official_records(root):
    """The official tiny-cpu records were run on a frozen track: its validation size, cadence,
    batch, data and target must be what their logs recorded (fields added later keep the records'
    behaviour by their defaults; the schedule length is a submission's choice; the fields that only
    judge runs, nanogpt.config.JUDGING_FIELDS, may be calibrated)."""
    current = track_config(tracks.get_track("tiny-cpu"))
    table = read_table(root / "records")
    logs = table[table.track == "tiny-cpu"].drop_duplicates("track_sha256").log
    assert len(logs) >= 1
    for log in logs:
        recorded = parse_log(root / "records" / log).config["track_config"]
        for key, value in recorded.items():
            if key == "model":
                assert {k: current["model"][k] for k in value} == value, log
            elif key != "steps" and key not in JUDGING_FIELDS:
                assert current[key] == value, (key, log)
    assert current["val_tokens"] == 65536 and current["eval_every"] == 25  # as README "Tracks" shows the board


def test_peak_memory_is_the_processes_peak_resident_set(tmp_path, monkeypatch):
    """On CPU, peak_mem_mb is the process's high-water resident set (VmHWM in /proc, in kB)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        pytest.skip("needs Linux /proc")

    def vm_hwm_mb() -> float:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)[1]) / 1024

    use_track(monkeypatch, val_tokens=2048, warmup_steps=1)
    before = vm_hwm_mb()
    assert run.main(["--no-compile", "--steps", "2", "--quiet", "--records-dir", str(tmp_path)]) == 0
    after = vm_hwm_mb()
    assert before - 0.1 <= read_table(tmp_path).iloc[0].peak_mem_mb <= after + 0.1


# ---- the track's limits: step budget and divergence threshold ---------------------------------


def test_a_schedule_longer_than_the_tracks_step_budget_is_refused(tmp_path, monkeypatch, capsys):
    """The budget (Track.max_steps) bounds every schedule, however it is chosen: at the budget a
    run is made, one step over it is refused before anything runs, through --steps or --set."""
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1, max_steps=4)
    assert run.main(["--no-compile", "--quiet", "--steps", "4", "--records-dir", str(tmp_path)]) == 0
    for over in (["--steps", "5"], ["--set", "steps=5"]):
        assert run.main(["--no-compile", "--quiet", *over, "--records-dir", str(tmp_path)]) == 2
        assert "at most the track's budget of 4" in capsys.readouterr().err
    assert len(read_table(tmp_path)) == 1


@pytest.mark.parametrize("margin, status", [(-0.5, "diverged"), (+0.5, "ok")])
def test_a_finite_train_loss_above_the_divergence_threshold_stops_the_run(tmp_path, monkeypatch, margin, status):
    """The first train loss of a zero-initialised head is about ln 257 = 5.55 (finite): a threshold
    just below it stops the run at step 1 as diverged (exit 1), just above it the run goes on; the
    recorded status is what verify derives from the log too."""
    use_track(monkeypatch, val_tokens=2048, warmup_steps=1, diverge_loss=math.log(257) + margin)
    code = run.main([*SHORT, "--records-dir", str(tmp_path)])
    row = read_table(tmp_path).iloc[0]
    assert (code, row.status) == ((1, "diverged") if status == "diverged" else (0, "ok"))
    assert row.steps == (1 if status == "diverged" else 6)
    log = parse_log(tmp_path / row.log)
    assert math.isfinite(log.training.steps[-1].loss)
    report = verify_records(tmp_path)
    assert report.results and not report.failed
