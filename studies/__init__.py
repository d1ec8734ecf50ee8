"""Optuna studies: hyper-parameter search and ablations of MicroCrystalNet and the classical models."""

import mcn  # noqa: F401  (sets the Keras backend default before anything imports keras)
