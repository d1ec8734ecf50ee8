"""What training needs from the Keras backend beyond Keras: seeding, a persistent compilation cache,
and which backend is fastest for a model on this kind of machine (`--backend auto`).

Nothing here imports keras at module level: `auto_backend` runs before KERAS_BACKEND is fixed.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np

import mcn


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, Keras' global SeedGenerator and the backend, as `keras.utils.set_random_seed`
    does, without importing TensorFlow under another backend (that import alone took 6 s per process).

    TensorFlow is seeded when it is the backend or already imported, so results are those of
    `keras.utils.set_random_seed` for the same seed.
    """
    import keras
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    backend = keras.backend.backend()
    if backend == "tensorflow" or "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.random.set_seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)


def use_compilation_cache(directory: str | Path) -> bool:
    """Keep XLA compilations on disk under `directory` (jax backend), so a model is compiled once per
    input shape and batch shape, not once per fold or per process; True when the cache is on.

    The other backends have no persistent cache: False, nothing changes.
    """
    import keras

    if keras.backend.backend() != "jax":
        return False
    import jax

    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True
