"""Errors the suite raises for bad user input, so command-line tools can print one clear line;
and the one way a command ends on Ctrl-C."""

from typing import NoReturn


class DataError(ValueError):
    """A data set, image, mask or table a user gave is unreadable or inconsistent; the message names it."""


INTERRUPTED_EXIT_CODE = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT)."""


def exit_interrupted(saved: str) -> NoReturn:
    """End a command stopped by Ctrl-C with one line (what was saved, how to resume), no traceback."""
    import sys

    print(f"\ninterrupted: {saved}", file=sys.stderr)
    sys.exit(INTERRUPTED_EXIT_CODE)
