"""benchmarks: `python -m benchmarks.run` orchestrates every model on the same folds, logs them to MLflow
(`benchmarks.tracking`, shared with the studies) and compares them (`benchmarks.table`)."""

import mcn  # noqa: F401  (sets the Keras backend default before anything imports keras)
