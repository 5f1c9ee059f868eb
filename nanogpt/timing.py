"""Clocks for the timed region. On GPU the train clock is read after a device synchronize; the
optimizer-step share is measured with CUDA events so that measuring it adds no host sync."""

from __future__ import annotations

import resource
import time

import torch

from nanogpt.distributed import sync


class TrainClock:
    """Wall-clock of training steps only; evaluation happens while it is stopped."""

    def __init__(self, device: str):
        self.device, self.elapsed, self.started = device, 0.0, None

    def start(self) -> None:
        sync(self.device)
        self.started = time.perf_counter()

    def stop(self) -> None:
        sync(self.device)
        self.elapsed += time.perf_counter() - self.started
        self.started = None


class RegionTimer:
    """Total time spent in a region across many steps (perf_counter on CPU, CUDA events on GPU)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.pairs: list = []
        self.total_cpu = 0.0

    def __enter__(self):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.pairs.append((start, end))
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.pairs[-1][1].record()
        else:
            self.total_cpu += time.perf_counter() - self.t0

    def total_s(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(s.elapsed_time(e) for s, e in self.pairs) / 1000.0
        return self.total_cpu


def peak_memory_mb(device: str) -> float:
    """Peak allocated device memory on GPU; the process's peak resident set size on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
