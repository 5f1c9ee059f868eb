"""The CUDA branches of the clock and the measured figures (nanogpt/timing.py, the warmup's memory
reset): skipped where no GPU exists, run wherever one does. A kernel that spins for a known number
of GPU cycles (torch.cuda._sleep) is the workload: it returns to the host at once, so a clock that
did not synchronize would see nothing of it."""

from __future__ import annotations

import time

import pytest
import torch

import run
from analysis.records import read_table
from nanogpt import tracks
from nanogpt.timing import RegionTimer, TrainClock, peak_memory_mb

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda:0"


def spin_seconds(cycles: int) -> float:
    """GPU time of one _sleep(cycles) kernel, measured with events around a synchronize."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000


@pytest.fixture(scope="module")
def cycles() -> int:
    """Cycles for a kernel of about 0.2 s on this GPU."""
    probe = 10_000_000
    return int(probe * 0.2 / spin_seconds(probe))


def test_the_train_clock_waits_for_the_device(cycles):
    kernel = spin_seconds(cycles)
    clock = TrainClock(DEVICE)
    clock.start()
    torch.cuda._sleep(cycles)
    clock.stop()
    assert clock.elapsed >= 0.9 * kernel, (clock.elapsed, kernel)


def test_the_region_timer_measures_device_time_without_a_host_sync(cycles):
    kernel = spin_seconds(cycles)
    timer = RegionTimer(DEVICE)
    t0 = time.perf_counter()
    for _ in range(3):
        with timer:
            torch.cuda._sleep(cycles)
    host = time.perf_counter() - t0
    assert host < 0.5 * kernel, host  # the host did not wait: events, not synchronize
    assert timer.total_s() == pytest.approx(3 * kernel, rel=0.1)


def test_peak_memory_is_the_devices_peak_allocation():
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / 2**20
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=DEVICE)
    del x
    assert 256 <= peak_memory_mb(DEVICE) - base < 256 + 8


def test_a_gpu_run_records_device_figures_and_forgets_memory_used_before_the_timed_steps(tmp_path, monkeypatch):
    """tiny-cpu's model on the GPU: the optimizer share comes from CUDA events, and the peak memory
    counter is reset after the warmup, so 2 GiB allocated and freed before the run do not count."""
    track = tracks.TRACKS["tiny-cpu"].with_overrides(device="cuda", val_tokens=2048, warmup_steps=1)
    monkeypatch.setitem(tracks.TRACKS, "tiny-cpu", track)
    x = torch.empty(2 * 2**30, dtype=torch.uint8, device=DEVICE)
    del x
    assert run.main(["--no-compile", "--steps", "4", "--quiet", "--records-dir", str(tmp_path)]) == 0
    row = read_table(tmp_path).iloc[0]
    assert row.status == "ok"
    assert 0 < row.opt_step_share < 1
    assert 0 < row.peak_mem_mb < 1024
