"""One exception type for every mistake a user can fix, and the one way entry points report it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input (flag, file, optimizer module, records table): the message says what and how to fix it."""


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
            except KeyboardInterrupt:
                print(interrupted, file=sys.stderr)
                return 130

        return guarded

    return wrap
