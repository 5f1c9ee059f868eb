"""Progress of the runs a sweep, a submission or a step search is waiting for, read from their logs.

Every run writes its log under <records-dir>/logs/ line by line (nanogpt.runlog), and the logs
are where the runs meet whatever launched them: a local process, a submitit job on this machine or a
Slurm job whose records folder is on a shared file system. So progress follows the log files
as they grow instead of any process's output: a new log is matched to the run it belongs to by
its config section (configuration key and seed), then its training lines give the step, the
train loss and an ETA. One short line per run that moved, every `every` seconds (less often when
many runs move: at most LINES lines per `every` seconds on average), and a line when a run's
result is written.

The ETAs count training time only (from the logs' train_time): compilation, evaluations and a
queue on a cluster come on top.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nanogpt.recording import group_key, hparams_text
from nanogpt.runlog import CODE_END, HEADER_RE, RESULT, TRAIN_RE, TRAINING

Say = Callable[[str], None]
LINES = 4  # progress lines per `every` seconds, on average, however many runs go at once


@dataclass(frozen=True)
class Expected:
    """A run being waited for: how lines name it, its configuration key and seed, its length."""

    label: str
    key: tuple[str, ...]
    seed: int
    steps: int


@dataclass
class LogFollower:
    """One growing run log, read incrementally (only the bytes added since the last read). The
    embedded code comes first and is skipped up to the line of 100 '='; then the config, the
    training lines and, at the end, the result."""

    path: Path
    offset: int = 0
    partial: str = ""
    section: str = "code"
    body: list[str] = field(default_factory=list)
    config: dict | None = None
    step: int = 0
    total: int = 0
    loss: float = float("nan")
    train_ms: float = 0.0
    result: dict | None = None

    def read(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()  # an incomplete last line waits for the next read
        for line in lines:
            self.feed(line)

    def feed(self, line: str) -> None:
        if self.section == "code":
            if line == CODE_END:
                self.section = "after code"
            return
        header = HEADER_RE.match(line)
        if header:
            self._close_section()
            self.section, self.body = header.group(1), []
            return
        if self.section == TRAINING:
            m = TRAIN_RE.match(line)
            if m:
                self.step, self.total, self.loss, self.train_ms = int(m[1]), int(m[2]), float(m[3]), float(m[4])
        elif self.section in ("config", RESULT):
            self.body.append(line)
            if self.section == RESULT:
                self._close_section()  # the result is the last section: parse it as soon as it is whole

    def _close_section(self) -> None:
        if self.section not in ("config", RESULT):
            return
        try:
            value = json.loads("\n".join(self.body))
        except json.JSONDecodeError:
            return  # not whole yet
        if self.section == "config":
            self.config = value
        else:
            self.result = value

    def identity(self) -> tuple[tuple[str, ...], int] | None:
        """(configuration key, seed) from the config section, once it has been read."""
        if self.config is None:
            return None
        c = self.config
        return group_key({**c, "hparams": hparams_text(c["hparams"])}), int(c["seed"])

    def eta_s(self) -> float | None:
        """Training seconds left at the mean step time so far."""
        if self.step == 0:
            return None
        return self.train_ms / self.step * (self.total - self.step) / 1000


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """Follows the logs of `runs` in `records_dir/logs` (files that were there before are ignored).
    `slots` is how many of the runs go at once (1: one after another), for the whole job's ETA."""

    def __init__(self, records_dir: str | Path, runs: list[Expected], slots: int, say: Say, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logs = Path(records_dir) / "logs"
        self.runs, self.slots, self.say, self.every, self.clock = runs, max(1, slots), say, every, clock
        self.before = self._names()
        self.followers: dict[str, LogFollower] = {}
        self.matched: dict[int, LogFollower] = {}  # index in runs -> its log
        self.shown: dict[int, int] = {}  # index -> step last shown
        self.finished: set[int] = set()
        self.next_at = -float("inf")

    def _names(self) -> set[str]:
        try:
            return {e.name for e in os.scandir(self.logs) if e.name.endswith(".txt")}
        except FileNotFoundError:
            return set()

    def poll(self) -> None:
        """Read what the logs added; say a line per run that moved (rate-bounded) and a line per
        run that finished."""
        for name in sorted(self._names() - self.before - set(self.followers)):
            self.followers[name] = LogFollower(self.logs / name)
        claimed = {id(f) for f in self.matched.values()}
        for f in self.followers.values():
            if f.result is None:
                f.read()
            if id(f) not in claimed and (ident := f.identity()) is not None:
                i = next((i for i, r in enumerate(self.runs) if i not in self.matched and (r.key, r.seed) == ident), None)
                if i is not None:
                    self.matched[i] = f
                    claimed.add(id(f))
        for i, f in sorted(self.matched.items()):
            if f.result is not None and i not in self.finished:
                self.finished.add(i)
                self.say(self.result_line(i))
        now = self.clock()
        if now < self.next_at:
            return
        moved = [i for i, f in sorted(self.matched.items()) if i not in self.finished and f.step > self.shown.get(i, 0)]
        if moved:
            self.next_at = now + self.every * max(1.0, len(moved) / LINES)
        for i in moved:
            self.shown[i] = self.matched[i].step
            self.say(self.progress_line(i))

    def progress_line(self, i: int) -> str:
        f = self.matched[i]
        return (f"  [{self.runs[i].label}] step {f.step}/{f.total}  train loss {f.loss:.4f}  ETA {duration(f.eta_s())}"
                f"  | job: {len(self.finished)}/{len(self.runs)} runs done, ETA {duration(self.job_eta_s())}")

    def result_line(self, i: int) -> str:
        r = self.matched[i].result or {}
        loss = r.get("final_val_loss")
        time_s = r.get("train_time_s")
        shown = f"final val loss {loss:.4f}" if isinstance(loss, int | float) else "no final val loss"
        return (f"  [{self.runs[i].label}] {r.get('status')}: {shown}, train time {duration(time_s)} "
                f"({len(self.finished)}/{len(self.runs)} runs done)  log: {self.matched[i].path}")

    def job_eta_s(self) -> float | None:
        """Training seconds until every run is done: each unfinished run's remaining steps (a run
        not started yet at the mean step time seen so far), spread over `slots` at once."""
        step_s = [f.train_ms / f.step / 1000 for f in self.matched.values() if f.step]
        if not step_s:
            return None
        mean_step_s = sum(step_s) / len(step_s)
        left = []
        for i, r in enumerate(self.runs):
            f = self.matched.get(i)
            if i in self.finished:
                continue
            left.append(f.eta_s() if f is not None and f.step else r.steps * mean_step_s)
        if not left:
            return 0.0
        return max(max(left), sum(left) / min(self.slots, len(left)))


@contextmanager
def watching(records_dir: str | Path, runs: list[Expected], slots: int, say: Say | None, every: float = 10.0,
             tick: float = 1.0) -> Iterator[None]:
    """Show the runs' progress from a background thread while the body waits for them; a last
    read at the end shows the results not shown yet. No `say`: nothing is shown."""
    if say is None:
        yield
        return
    progress = Progress(records_dir, runs, slots, say, every)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(tick):
            progress.poll()

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress.poll()
