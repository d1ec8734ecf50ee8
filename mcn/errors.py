"""Errors the suite raises for bad user input, so command-line tools can print one clear line;
the one way a command ends on Ctrl-C; and warnings turned into one line naming what they concern."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def warnings_as_notes(name: str, notes: list[tuple[str, str]] | None = None) -> Iterator[None]:
    """Each warning raised inside becomes one line `name: message` on stderr (through tqdm, so a
    progress bar stays whole) and, with `notes`, a (name, message) entry: a raw Python warning
    names neither the image nor anything a user can act on, and repeats its source line."""
    import sys

    from tqdm import tqdm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:  # an image that then fails keeps the warnings raised before its error
            for warning in caught:
                tqdm.write(f"{name}: {warning.message}", file=sys.stderr)
                if notes is not None:
                    notes.append((name, str(warning.message)))
