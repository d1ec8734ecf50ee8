"""MicroCrystalNet: classify microcrystals segmented from SEM images of carbonate rocks.

Keras must learn its backend before it is first imported, and keras on its own defaults to
tensorflow; the suite's default is torch (segment-anything needs torch anyway). Importing `mcn`
(every package of the suite does so first) sets that default without overriding a user's choice.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

__version__ = "0.1.0"
