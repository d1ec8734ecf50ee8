"""What training needs from the Keras backend beyond Keras: seeding, a persistent compilation cache,
and which backend is fastest for a model on this kind of machine (`--backend auto`).

Nothing here imports keras at module level: `auto_backend` runs before KERAS_BACKEND is fixed.
"""

from __future__ import annotations

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


CPU_FASTEST = {"microcrystalnet": "tensorflow", "vgg16": "torch", "resnet50": "torch", "inceptionv3": "torch",
               "densenet121": "tensorflow", "efficientnetb0": "tensorflow"}
"""The fastest Keras backend per model for training on a CPU (`benchmarks.model_speed`, 2 x86 cores).
Baselines at 96 px (benchmarks/results/models/, 512 crystals): tensorflow trains DenseNet121 and
EfficientNetB0 1.6x faster than torch (25 vs 15.5 and 57 vs 36 crystals/s); torch wins VGG16 (9.2
vs 6.4) and ResNet50 (16.1 vs 13.4); InceptionV3 ties (27 vs 25), which keeps the default, torch.
MicroCrystalNet, torch and tensorflow back to back on a shared CPU: 32 px 142 vs 328 and 156 vs
218 crystals/s, 64 px 40 vs 83 and 40 vs 46 (an earlier quiet-machine run at 64 px: 103 vs 103)."""

AUTO = "auto"


def auto_backend(models: list[str]) -> tuple[str, str]:
    """The Keras backend `--backend auto` picks for training `models` in one process, and why.

    With a CUDA GPU: jax where installed (XLA; 5-18x Keras-on-torch on an H100, see the design
    notes), else torch. On a CPU: the backend most of `models` train fastest on (`CPU_FASTEST`),
    torch on a tie or when the winner is not installed (said in the reason). Imports no keras.
    """
    import importlib.util

    import torch

    installed = {b for b in mcn.BACKENDS if importlib.util.find_spec(b) is not None}
    if torch.cuda.is_available():
        if "jax" in installed:
            return "jax", "a CUDA GPU is present and jax is installed (XLA is the fast path on a GPU)"
        return "torch", "a CUDA GPU is present but jax is not installed (pip install -e \".[jax]\")"
    votes = [CPU_FASTEST.get(m, "torch") for m in models]
    best = max(sorted(set(votes)), key=lambda b: (votes.count(b), b == "torch"))
    if votes.count(best) == votes.count("torch"):
        best = "torch"
    if best not in installed:
        return "torch", f"{best} trains {', '.join(models)} fastest on a CPU but is not installed"
    return best, f"no GPU; {best} trains {', '.join(m for m, b in zip(models, votes) if b == best)} fastest on a CPU"


def resolve_backend(name: str, models: list[str]) -> str:
    """`name`, or for "auto" the backend `auto_backend` picks, printed with its reason."""
    if name != AUTO:
        return name
    backend, reason = auto_backend(models)
    print(f"backend auto: {backend} ({reason})")
    return backend
