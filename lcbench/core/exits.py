"""Exit codes and how an error is shown: one line for an error the user can fix (bad input, a full or
unwritable disk), the traceback for a bug. Shared by the CLI and the sweep jobs."""

from __future__ import annotations

import signal
import sys
import traceback

from .errors import LcbenchError, RankLost
from .store import storage_error

EXIT_USER = 2  # a user error: one line on stderr
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug, with its traceback
EXIT_RANK_LOST = 75  # sysexits.h EX_TEMPFAIL: another rank of a DDP run ended; the same command resumes
EXIT_INTERRUPTED = 130


def exit_code(error: BaseException) -> int:
    """Print `error` as the user should see it and return the exit code for it."""
    if isinstance(error, KeyboardInterrupt):
        print("lcbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    user_error = error if isinstance(error, LcbenchError) else storage_error(error)
    if user_error is not None:  # the user's to fix (a full disk or an unwritable root included)
        print(f"lcbench: error: {user_error}", file=sys.stderr)
        return EXIT_RANK_LOST if isinstance(user_error, RankLost) else EXIT_USER
    traceback.print_exception(error)
    print(
        f"lcbench: internal error (exit {EXIT_INTERNAL}); please report it with the traceback above",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def how_it_ended(exitcode: int) -> str:
    """A child process's end as a person says it ("was killed by SIGKILL", "ended with exit 75"), from an
    exit code that is minus the signal for a killed process (multiprocessing's and torchrun's)."""
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"ended with exit {exitcode}"


def first_failed_rank(exitcodes: dict[int, int | None]) -> tuple[int, int]:
    """The rank whose end stopped a DDP run, and its exit code, from the ranks' exit codes (None: still
    running): the lowest rank that failed on its own, not one the launcher stopped after it (SIGTERM) or
    one that noticed it had gone (`RankLost`); where every rank ended so, the lowest."""
    failed = {r: c for r, c in sorted(exitcodes.items()) if c not in (None, 0)}
    causes = {r: c for r, c in failed.items() if c not in (-signal.SIGTERM, EXIT_RANK_LOST)}
    if not causes:  # a rank SIGTERMed from outside looks like one the launcher stopped
        causes = {r: c for r, c in failed.items() if c != EXIT_RANK_LOST} or failed
    return next(iter(causes.items()))
