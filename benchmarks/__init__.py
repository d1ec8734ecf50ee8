"""benchmarks: `python -m benchmarks.run` orchestrates every model on the same folds, logs them to MLflow
and compares them, through the experiment layer it shares with the studies (`mcn.experiment`)."""

import mcn  # noqa: F401  (sets the Keras backend default before anything imports keras)
