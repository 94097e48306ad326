"""Exit codes and how an error is shown: one line for an error the user can fix (bad input, a full or
unwritable disk), the traceback for a bug. Shared by the CLI and the sweep jobs."""

from __future__ import annotations

import sys
import traceback

from .errors import LcbenchError
from .store import storage_error

EXIT_USER = 2  # a user error: one line on stderr
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug, with its traceback
EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
    """Print `error` as the user should see it and return the exit code for it."""
    if isinstance(error, KeyboardInterrupt):
        print("lcbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    user_error = error if isinstance(error, LcbenchError) else storage_error(error)
    if user_error is not None:  # the user's to fix (a full disk or an unwritable root included)
        print(f"lcbench: error: {user_error}", file=sys.stderr)
        return EXIT_USER
    traceback.print_exception(error)
    print(
        f"lcbench: internal error (exit {EXIT_INTERNAL}); please report it with the traceback above",
        file=sys.stderr,
    )
    return EXIT_INTERNAL
