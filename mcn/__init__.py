"""MicroCrystalNet: classify microcrystals segmented from SEM images of carbonate rocks.

Keras must learn its backend before it is first imported, and keras on its own defaults to
tensorflow; the suite's default is torch (segment-anything needs torch anyway). Importing `mcn`
(every package of the suite does so first) sets that default without overriding a user's choice.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

__version__ = "0.1.0"

BACKENDS = ("torch", "tensorflow", "jax")
"""The Keras backends the suite runs on; torch is the default."""


def select_backend(name: str) -> None:
    """Set KERAS_BACKEND before keras is imported; refuse if keras already runs another backend.

    Command-line tools call it with their `--backend` right after parsing, before importing keras.
    """
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise ValueError(f"keras is already imported with the {current} backend; run in a fresh process "
                             f"to use {name}")
    os.environ["KERAS_BACKEND"] = name
