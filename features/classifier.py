"""A Keras crystal classifier as `mcn.train` saves it, for `features.export`'s `--classifier`."""

from __future__ import annotations

import mcn  # noqa: F401  (sets the Keras backend before keras is first imported)

import json
from pathlib import Path

import numpy as np

from mcn.data.dataset import CrystalDataset
from mcn.errors import DataError


class Classifier:
    """A Keras crystal classifier as `mcn.train` saves it: `fold_<k>/model.keras` beside `result.json`.

    The class names, in output order, come from `result.json`'s `class_names`. Crops are cut as for
    training (`features.pipeline.CROP_MARGIN`, background suppressed) and made square inputs of the model's size by
    `CrystalDataset.patches` (`square_resize`).
    """

    def __init__(self, path: Path) -> None:
        record = path.parent / "result.json"
        if not path.is_file():
            raise DataError(f"{path}: classifier model not found")
        import keras

        import mcn.models  # noqa: F401  (registers the suite's custom layers for loading)

        try:
            self.class_names = tuple(str(c) for c in json.loads(record.read_text())["class_names"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: no class names beside the model (expected {record.name} with "
                            f"class_names, as mcn.train writes it): {exc}") from exc
        try:
            self.model = keras.saving.load_model(path)
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path}: cannot load the classifier ({exc})") from exc
        self.input_size = int(self.model.input_shape[1])
        self.channels = int(self.model.input_shape[-1])
        outputs = int(self.model.output_shape[-1])
        if outputs != len(self.class_names):
            raise DataError(f"{record}: {len(self.class_names)} class names for a model with {outputs} outputs")

    def predict_proba(self, crystals: CrystalDataset) -> np.ndarray:
        """(n, n_classes) class probabilities of every crystal."""
        x = crystals.patches(self.input_size)
        if self.channels != 1:
            x = np.repeat(x, self.channels, axis=-1)
        return np.asarray(self.model.predict(x, batch_size=64, verbose=0), dtype=np.float64)
