"""One exception type for every mistake a user can fix, and the one way entry points report it."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator


class UserError(Exception):
    """Bad input (flag, file, optimizer module, records table): the message says what and how to fix it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, Slurm preemption, torchrun stopping the other ranks when one dies): an
    interruption like Ctrl-C, so the run is recorded as interrupted and the table stays intact."""


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` in the main thread; the previous handler
    comes back afterwards (processes forked later, e.g. a multiprocessing pool that is terminated
    with SIGTERM, must keep the default)."""

    def handler(signum, frame):
        raise Terminated(f"signal {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 (128 + SIGTERM) for a termination, as shells report them."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def entry_point(interrupted: str = "interrupted") -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Wrap a command's main(): a UserError is one line on stderr and exit 2; Ctrl-C prints
    `interrupted` (what was kept and how to resume) and exits 130; anything else is a bug and
    keeps its traceback."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except UserError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            except KeyboardInterrupt as e:
                print(interrupted, file=sys.stderr)
                return interrupted_exit_code(e)

        return guarded

    return wrap
