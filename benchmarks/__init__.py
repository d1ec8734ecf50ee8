"""`python -m benchmarks.run`: every model on the same folds, tracked in MLflow, compared in tables."""

import mcn  # noqa: F401  (sets the Keras backend default before anything imports keras)
