"""The Normalized Sparse Reduction (NSR) block of MicroCrystalNet (paper section 3, Fig. 4).

The block sits between the flattened conv stem and the fully connected head:
z-score normalisation -> PCA reduction -> L1 sparse feature selection. Each stage is a small Keras
layer so that it saves and reloads with a `.keras` model and runs on every Keras backend.

Design (the paper gives the stages, not how they are realised in a trained network):

* **z-score** (`ZScore`): fixed per-feature mean and standard deviation of the stem features of the
  *training* patches, set by `prepare_model` (like scikit-learn's `StandardScaler` inside a
  pipeline). Not a running / batch statistic: training and inference then apply the same transform,
  and the PCA that follows is fitted on exactly these z-scored features, so the two stay consistent.
* **PCA** (`PCAProjection`): a real PCA, not a renamed Dense layer. `prepare_model` runs an SVD of
  the centred, z-scored training features and sets the layer's `mean` and `components` (and keeps
  the explained variance); the layer computes `(x - mean) @ components.T` like
  `sklearn.decomposition.PCA.transform`. It is frozen by default: a trainable projection would just be
  a Dense layer initialised from a PCA, and refitting it during training would re-base the input
  of the FC layers that were trained on the previous basis (axes reorder, rotate and flip sign). So
  the PCA is fitted once per fold, before training, on the stem at initialisation, and the stem
  learns to put the discriminative signal into that top-variance subspace. `pca_trainable=True`
  (an ablation) lets the optimiser fine-tune it from the PCA start. Calling `prepare_model` again
  refits both stages (meaningful before training, not after).
* **L1 sparse selection** (`L1Gate`): one non-negative gate per component, initialised to 1,
  multiplied into the features, with an L1 penalty `strength * sum(gate)` added to the loss. The
  penalty drives the gates of uninformative components to exactly zero (the non-negativity
  constraint clips them there), which is feature selection: `selected_features(model)` lists the
  survivors. The gate is a magnitude only (its sign is absorbed by the next Dense layer). Because the
  following Dense -> BatchNorm ignores a common rescaling of its inputs, read gates relative to
  each other, not as absolute weights.

`prepare_model` first sets the BatchNorm moving statistics from the training patches
(`recalibrate_batchnorm`), so the features both stages are fitted on are batch-normalised as the FC
head sees them in training; an untrained BatchNorm (mean 0, variance 1) would pass raw conv outputs
of a different scale per channel.

Before `prepare_model` runs, z-score is the identity and the PCA a random orthogonal projection, so a
model still builds, trains and saves (smoke tests); a real run always prepares it first.
"""

from __future__ import annotations

import numpy as np

import mcn  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
import keras
from keras import ops

from mcn.models.batchnorm import recalibrate_batchnorm, sample_patches

PACKAGE = "mcn"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZScore(keras.layers.Layer):
    """Per-feature z-score with fixed training-set statistics (set by `prepare_model`)."""

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.std = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="std")

    def call(self, inputs):
        return (inputs - self.mean) / self.std

    def fit(self, features: np.ndarray) -> np.ndarray:
        """Set the statistics from training features; return them z-scored (for the next stage)."""
        features = np.asarray(features, dtype=np.float64)
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        # Constant features pass through centred, as in StandardScaler. Near-constant ones (ReLUs
        # that are almost dead on the untrained stem) get a floor of 1% of the median spread:
        # dividing by their tiny spread would amplify them ~1e4-fold as soon as training moves them.
        floor = 0.01 * np.median(std[std > 0]) if (std > 0).any() else 0.0
        std = np.where(std == 0, 1.0, np.maximum(std, floor))
        self.mean.assign(mean.astype("float32"))
        self.std.assign(std.astype("float32"))
        return (features - mean) / std


@keras.saving.register_keras_serializable(package=PACKAGE)
class PCAProjection(keras.layers.Layer):
    """Projection onto the leading principal components of the training features (see module doc)."""

    def __init__(self, n_components: int, **kwargs):
        super().__init__(**kwargs)
        self.n_components = int(n_components)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if self.n_components > dim:
            raise ValueError(
                f"pca_dim must be <= the {dim} flattened stem features; got {self.n_components}. "
                "Lower pca_dim or enlarge the input / stem."
            )
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", name="mean")
        self.components = self.add_weight(
            shape=(self.n_components, dim), initializer="orthogonal", name="components"
        )
        self.explained_variance = self.add_weight(
            shape=(self.n_components,), initializer="zeros", trainable=False, name="explained_variance"
        )

    def call(self, inputs):
        return ops.matmul(inputs - self.mean, ops.transpose(self.components))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.n_components)

    def fit(self, features: np.ndarray) -> np.ndarray:
        """Fit the PCA by SVD of the centred features; return the projected features.

        Signs follow scikit-learn's convention (each component's largest-magnitude loading is
        positive), so the projection matches `PCA(n).fit(features).transform(features)`.
        """
        features = np.asarray(features, dtype=np.float64)
        n_samples = features.shape[0]
        if n_samples < self.n_components:
            raise ValueError(
                f"pca_dim={self.n_components} needs at least {self.n_components} training patches; "
                f"got {n_samples}. Lower pca_dim or pass more training patches to prepare_model."
            )
        mean = features.mean(axis=0)
        centred = features - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        components = vt[: self.n_components]
        rows = np.arange(self.n_components)
        signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
        components *= np.where(signs == 0, 1.0, signs)[:, None]
        self.mean.assign(mean.astype("float32"))
        self.components.assign(components.astype("float32"))
        variance = singular[: self.n_components] ** 2 / max(n_samples - 1, 1)
        self.explained_variance.assign(variance.astype("float32"))
        return centred @ components.T

    def get_config(self):
        return {**super().get_config(), "n_components": self.n_components}


@keras.saving.register_keras_serializable(package=PACKAGE)
class L1Gate(keras.layers.Layer):
    """Non-negative per-feature gate with an L1 penalty: sparse feature selection (see module doc)."""

    def __init__(self, strength: float, **kwargs):
        super().__init__(**kwargs)
        self.strength = float(strength)

    def build(self, input_shape):
        self.gate = self.add_weight(
            shape=(int(input_shape[-1]),),
            initializer="ones",
            regularizer=keras.regularizers.L1(self.strength),
            constraint=keras.constraints.NonNeg(),
            name="gate",
        )

    def call(self, inputs):
        return inputs * self.gate

    def get_config(self):
        return {**super().get_config(), "strength": self.strength}


def nsr_block(
    features,
    *,
    zscore: bool,
    pca: bool,
    pca_dim: int,
    pca_trainable: bool,
    l1: bool,
    l1_strength: float,
):
    """Apply the enabled NSR stages to a flattened feature tensor (functional API)."""
    if zscore:
        features = ZScore(name="nsr_zscore")(features)
    if pca:
        features = PCAProjection(pca_dim, trainable=pca_trainable, name="nsr_pca")(features)
    if l1:
        features = L1Gate(l1_strength, name="nsr_l1")(features)
    return features


def prepare_model(model: keras.Model, x_train: np.ndarray, batch_size: int = 256,
                  max_samples: int = 1024, seed: int = 0) -> keras.Model:
    """Fit the data-dependent NSR stages (z-score, PCA) from training patches; no-op without them.

    First the BatchNorm moving statistics are set from the training patches in one pass, so the
    stem features the NSR stages are fitted on are batch-normalised as in training, not passed raw
    by an untrained BatchNorm (mean 0, variance 1). Then the stem features of `x_train` go through
    the stages in order, each fitted on the output of the previous one. Call it once per fold,
    before training, with that fold's training patches only (other patches would leak).
    Statistics come from at most `max_samples` patches drawn with `seed`: 1,024 is 4-8 times the
    PCA dimensions used (128-256); more costs stem passes for no better estimate.
    """
    stages = [layer for layer in model.layers if isinstance(layer, (ZScore, PCAProjection))]
    if not stages:
        return model
    x_train = np.asarray(x_train, dtype="float32")
    expected = tuple(model.input_shape[1:])
    if x_train.ndim != 4 or x_train.shape[1:] != expected:
        raise ValueError(
            f"prepare_model: x_train must have shape (n, {', '.join(map(str, expected))}) to match "
            f"model {model.name!r}; got {x_train.shape}."
        )
    x_train = sample_patches(x_train, max_samples, seed)
    recalibrate_batchnorm(model, x_train, batch_size, max_samples, seed)
    stem = keras.Model(model.input, stages[0].input)
    features = stem.predict(x_train, batch_size=batch_size, verbose=0)
    for stage in stages:
        features = stage.fit(features)
    return model


def selected_features(model: keras.Model, tol: float = 1e-6) -> np.ndarray:
    """Indices of the NSR features whose L1 gate is still open (> tol) in a trained model."""
    gate = keras.ops.convert_to_numpy(model.get_layer("nsr_l1").gate)
    return np.flatnonzero(gate > tol)
