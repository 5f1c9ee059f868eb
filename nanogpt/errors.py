"""One exception type for every mistake a user can fix; the CLIs print it as a single line."""


class UserError(Exception):
    """Bad input (flag, file, optimizer module, records table): the message says what and how to fix it."""
