"""Training a registry CNN under the paper's protocol (section 4.3), fold by fold, resumably.

Protocol: Adam at 1e-3, categorical cross-entropy, batch 32, up to 30 epochs, ReduceLROnPlateau
(factor 0.1, patience 5) and early stopping on the validation loss with the best weights kept, and
the training part balanced by 90-degree rotations. Every knob lives in `TrainConfig`.

Each fold is saved to `out_dir/fold_<k>/` (model.keras, result.json, arrays.npz), written into a
temporary folder and renamed into place, so a fold folder is either complete or absent and an
interrupted cross-validation resumes where it stopped. A fold folder records the hash of the run's
settings and the data fingerprint; resuming against different ones is refused, never mixed.

Modules: `config` (the settings), `protocol` (training and cross-validation), `folds` (fold folders
on disk), `cli` (`python -m mcn.train`). Keras is imported inside functions only: the command line
sets KERAS_BACKEND from `--backend` before keras is first imported.
"""

from mcn.train.cli import main, parse_hparams
from mcn.train.config import OPTIMIZERS, TrainConfig
from mcn.train.folds import FoldResult, ResumeError, fold_dir, run_hash, split_hash
from mcn.train.protocol import cross_validate, fold_seed, predict_all, train_fold, training_arrays

__all__ = ["OPTIMIZERS", "FoldResult", "ResumeError", "TrainConfig", "cross_validate", "fold_dir", "fold_seed",
           "main", "parse_hparams", "predict_all", "run_hash", "split_hash", "train_fold", "training_arrays"]
