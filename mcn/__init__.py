"""MicroCrystalNet: classify microcrystals segmented from SEM images of carbonate rocks.

Keras must learn its backend before it is first imported, and keras on its own defaults to
tensorflow; the suite's default is torch (segment-anything needs torch anyway). Importing `mcn`
(every package of the suite does so first) sets that default without overriding a user's choice.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
# OpenMP threads (torch's CPU kernels) busy-wait at every barrier by default: on a CPU shared with
# other jobs a waiting thread burns the core its partner needs, and a Keras-on-torch training step
# ran 6x slower (MicroCrystalNet at 32 px: 17-21 -> 99-130 crystals/s with PASSIVE on 2 shared
# cores; benchmarks.model_speed). Waiting policy only: results do not change. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
