"""Per-crystal features (handcrafted morphometry, texture, CNN embeddings) and classical models."""

import mcn  # noqa: F401  (sets the Keras backend default before anything imports keras)
