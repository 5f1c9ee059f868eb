"""How busy the machine was while a run was timed (the contention figure), and how fast it is
(the machine figure).

A run's time is only a measurement of the optimizer when nothing else competed for the machine:
on a 2-core VM one busy process slows torch steps several-fold, on a shared GPU another job does
the same. The meter reads cheap kernel counters at the start and end of every timed step (outside
the clock), so it covers exactly the timed region:

- cpu_util: the process's CPU time over (wall time x torch threads): about 1 on a quiet machine,
  lower when its threads wait for a core;
- cpu_pressure: the share of the wall time in which some task waited for a CPU (Linux PSI,
  /proc/pressure/cpu "some"); None where the kernel has no PSI;
- steal: the share of all CPU time the hypervisor gave to other guests (/proc/stat);
- on GPU (NVML, through nvidia-ml-py, where installed): the most other processes seen on the
  device and its mean utilisation, sampled every GPU_SAMPLE_EVERY steps.

THRESHOLDS says, per device kind, when a run is `contended`. The machine figure is the median
time of a few eager forward-backward passes of the track's model on one fixed micro-batch,
measured before the warmup: it lets a leaderboard normalise CPU times to a reference machine.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass

import torch

from nanogpt.distributed import sync

GPU_SAMPLE_EVERY = 10  # NVML is queried on every 10th timed step (each query costs ~0.1 ms)
# When a run counts as contended (a run on a shared machine is evidence only when accepted as such):
# - cpu: another runnable task waited for a CPU during more than 10 % of the timed wall time, or the
#   hypervisor stole more than 5 % of the CPU time, or (without PSI) the process used less than 70 %
#   of the CPU time its threads could have used;
# - gpu: another process held a context on the run's GPU.
THRESHOLDS = {"cpu": {"cpu_pressure": 0.10, "steal": 0.05, "cpu_util": 0.70}, "gpu": {"gpu_other_procs": 0}}
CALIBRATION_REPEATS = 7  # timed passes of the machine figure, after CALIBRATION_WARMUP untimed ones
CALIBRATION_WARMUP = 2


@dataclass
class Counters:
    wall: float
    cpu: float  # process user + system seconds (all threads)
    pressure_us: int | None  # PSI cpu "some" total, microseconds
    steal: int | None  # /proc/stat ticks, all CPUs
    ticks: int | None


def _pressure_us() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    return None


def _stat_ticks() -> tuple[int | None, int | None]:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[7], sum(fields[:8])  # steal; user..steal (guest time is already inside user)
    return None, None


def read_counters() -> Counters:
    t = os.times()
    steal, ticks = _stat_ticks()
    return Counters(time.perf_counter(), t.user + t.system, _pressure_us(), steal, ticks)


class _Nvml:
    """Other processes on this GPU and its utilisation, through NVML; absent without nvidia-ml-py."""

    def __init__(self, device: str):
        import pynvml  # nvidia-ml-py (pip install -e '.[gpu]')

        pynvml.nvmlInit()
        index = torch.device(device).index or 0
        uuid = torch.cuda.get_device_properties(index).uuid
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.handle = next((h for h in handles if str(uuid) in str(pynvml.nvmlDeviceGetUUID(h))), handles[index])
        self.nvml = pynvml

    def sample(self) -> tuple[int, float]:
        procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        others = sum(1 for p in procs if p.pid != os.getpid())
        return others, float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)


class ContentionMeter:
    """Accumulates the counters over the timed steps only (start/stop around each one)."""

    def __init__(self, device: str, threads: int):
        self.kind = "gpu" if device.startswith("cuda") else "cpu"
        self.threads = max(1, threads)
        self.wall = self.cpu = 0.0
        self.pressure_us: int | None = 0
        self.steal: int | None = 0
        self.ticks: int | None = 0
        self.steps = 0
        self.gpu_others: list[int] = []
        self.gpu_util: list[float] = []
        self.nvml = None
        if self.kind == "gpu":
            with contextlib.suppress(Exception):  # no nvidia-ml-py, no driver access: the GPU figures stay None
                self.nvml = _Nvml(device)
        self._t0: Counters | None = None

    def start(self) -> None:
        self._t0 = read_counters()

    def stop(self) -> None:
        t1, t0 = read_counters(), self._t0
        self.wall += t1.wall - t0.wall
        self.cpu += t1.cpu - t0.cpu
        self.pressure_us = None if None in (self.pressure_us, t0.pressure_us, t1.pressure_us) else \
            self.pressure_us + t1.pressure_us - t0.pressure_us
        if None in (self.steal, t0.steal, t1.steal):
            self.steal = self.ticks = None
        else:
            self.steal += t1.steal - t0.steal
            self.ticks += t1.ticks - t0.ticks
        self.steps += 1
        if self.nvml is not None and self.steps % GPU_SAMPLE_EVERY == 1:
            with contextlib.suppress(Exception):
                others, util = self.nvml.sample()
                self.gpu_others.append(others)
                self.gpu_util.append(util)

    def figure(self) -> dict:
        """The contention columns of the run's row."""
        if self.wall <= 0:
            return {"cpu_util": None, "cpu_pressure": None, "steal": None, "gpu_util": None, "gpu_other_procs": None,
                    "contended": None}
        fig = {
            "cpu_util": round(self.cpu / (self.wall * self.threads), 4),
            "cpu_pressure": None if self.pressure_us is None else round(self.pressure_us / 1e6 / self.wall, 4),
            "steal": None if not self.ticks else round(self.steal / self.ticks, 4),
            "gpu_util": round(statistics.fmean(self.gpu_util), 1) if self.gpu_util else None,
            "gpu_other_procs": max(self.gpu_others) if self.gpu_others else None,
        }
        fig["contended"] = is_contended(fig, self.kind)
        return fig


def is_contended(fig: dict, kind: str) -> bool:
    """The threshold rule of THRESHOLDS for a device kind ("cpu" or "gpu")."""
    limits = THRESHOLDS[kind]
    if kind == "gpu":
        return (fig["gpu_other_procs"] or 0) > limits["gpu_other_procs"]
    if fig["cpu_pressure"] is not None:
        return fig["cpu_pressure"] > limits["cpu_pressure"] or (fig["steal"] or 0) > limits["steal"]
    return fig["cpu_util"] < limits["cpu_util"] or (fig["steal"] or 0) > limits["steal"]


def machine_figure(model: torch.nn.Module, vocab_size: int, batch: int, seq_len: int, device: str, autocast) -> float:
    """Fastest of CALIBRATION_REPEATS eager forward + backward passes of `model` on one fixed random
    micro-batch, in milliseconds. The minimum, not the median: on a quiet machine every pass does
    the same work, and anything else running or a machine still warming up only adds time, so the
    fastest pass is what the machine can do. (The median of 5 passes before the warmup once read
    298.7 ms on a machine that read 198.6-212.3 ms in other runs at the same step time.) Called
    after the warmup, when threads, allocator and caches are in their running state.
    Leaves no gradients and draws from its own generator: the run is untouched."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (batch, seq_len + 1), generator=gen).to(device)
    times = []
    for i in range(CALIBRATION_WARMUP + CALIBRATION_REPEATS):
        sync(device)
        t0 = time.perf_counter()
        with autocast():
            loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        sync(device)
        if i >= CALIBRATION_WARMUP:
            times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return round(1000 * min(times), 3)
