"""Benchmark profiles: how much compute one `python -m benchmarks.run` spends.

`paper` is the paper's protocol (section 4.3) at every model's full input size; `quick` is a recipe
for a 2-core CPU that gets MicroCrystalNet to its converged score within the default command's
~15-minute budget; `smoke` is for tests. The numbers live here, in one place, so they are easy to
tune after timing a real run.

How `quick` was chosen (default data, 5 sample-grouped folds, seed 0; benchmarks/results/reference
and benchmarks/results/recipe):
- The converged references, `paper` protocol on this CPU: MicroCrystalNet at 64 px reaches macro-F1
  0.680 +- 0.100 (validation macro-F1 peaks at epoch 22, median over folds; 27.6 epochs run);
  EfficientNetB0 at 32 px 0.403 +- 0.090 (early stopping keeps epoch 8).
- MicroCrystalNet at 32 px with 8 epochs (the old `quick`) scored 0.635 +- 0.025: under-trained, not
  weak. 16 epochs at 32 px score 0.712 +- 0.026, above the 64 px reference, for ~6 s per epoch and
  fold on 2 quiet cores (about 8 minutes of the default run). The other levers (one-cycle
  schedule, label smoothing, test-time flips, batch 64) are measured in the recipe ablation
  (`python -m studies.ablation --ablation recipe`).
- The baselines are not in `quick` by default: EfficientNetB0, the cheapest, scores 0.40 at 32 px
  under the paper protocol, where early stopping keeps epoch 8 (validation macro-F1 peaks at 11);
  8 epochs would add ~15 minutes on this CPU, and one epoch left it at 0.34, a row that teaches
  nothing. `--models cnn` (or `all`) adds the five at 8 epochs and 32 px (InceptionV3 at its
  75 px minimum): per training crystal at batch 32, EfficientNetB0 ~9 ms, VGG16 18 ms, DenseNet121
  19 ms, ResNet50 20 ms, InceptionV3 28 ms, against MicroCrystalNet's ~2.5 ms.
- After few steps the BatchNorm moving averages still weigh their initial values, so `quick`
  re-estimates them on training patches after training (`recalibrate_bn`): without it a 1-epoch
  EfficientNetB0 predicted one class. The classical models fit their folds in parallel (`--jobs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from features.embeddings import FEATURE_SETS
from features.zoo import list_classifiers

CNN_MODELS = ("microcrystalnet", "vgg16", "resnet50", "inceptionv3", "densenet121", "efficientnetb0")
"""The paper's model and its five baselines, in table order."""

CLASSIFIERS = tuple(list_classifiers())
"""The classical model zoo, in table order."""


@dataclass(frozen=True)
class Profile:
    """Training budget per model; `None` input size means the model's own default."""

    name: str
    description: str
    epochs: int
    batch_size: int
    lr_patience: int = 5
    early_stopping_patience: int = 10
    recalibrate_bn: bool = False
    crossfit: int = 0
    """Inner folds that cross-fit the embedding CNN for the embedding and hybrid rows (0: off). Off in
    every profile: measured on the default data (quick budget, K=3), cross-fitted raw embeddings
    dropped the embedding rows (8-epoch CNN) from macro-F1 0.67-0.68 to 0.28-0.32 and the hybrid rows by 0.006-0.017,
    because nothing aligns the inner CNNs' embedding axes with the outer CNN's (see features.crossfit).
    Each outer fold would also train K more CNNs."""
    input_sizes: dict[str, int | None] = field(default_factory=dict)
    epochs_per_model: dict[str, int] = field(default_factory=dict)
    hparams: dict[str, dict] = field(default_factory=dict)
    cnn_models: tuple[str, ...] = CNN_MODELS
    classifiers: tuple[str, ...] = CLASSIFIERS
    feature_sets: tuple[str, ...] = FEATURE_SETS

    def train_kwargs(self, model: str) -> dict:
        """Keyword arguments for `mcn.train.TrainConfig` (seed added by the caller)."""
        return {
            "epochs": self.epochs_per_model.get(model, self.epochs),
            "batch_size": self.batch_size,
            "lr_patience": self.lr_patience,
            "early_stopping_patience": self.early_stopping_patience,
            "recalibrate_bn": self.recalibrate_bn,
            "input_size": self.input_sizes.get(model),
        }

    def model_hparams(self, model: str) -> dict:
        """Architecture overrides for `mcn.models.create_model` (empty: the model's defaults)."""
        return dict(self.hparams.get(model, {}))

    def default_models(self) -> list[str]:
        """Every model this profile runs when `--models` is not given."""
        return [*self.cnn_models, *(f"{c}:{f}" for c in self.classifiers for f in self.feature_sets)]

    def digest(self) -> str:
        """Hash of every setting: results made under other numbers are never reused."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


FAMILIES = ("all", "cnn", "baselines", "classical")
"""Group names `--models` accepts."""


def model_kind(name: str) -> str:
    """"classical" for CLASSIFIER:FEATURES names, "cnn" for registry names."""
    return "classical" if ":" in name else "cnn"


def resolve_models(spec: str | None, profile: Profile, cnns: Sequence[str] = CNN_MODELS,
                   classifiers: Sequence[str] = CLASSIFIERS, kinds: Sequence[str] = ("cnn", "classical")) -> list[str]:
    """The model names a `--models` value asks for, CNNs first, unknown names refused.

    Without a value: the profile's models. `cnn`, `baselines` and `all` mean every registered CNN
    (run at the profile's sizes), so `--profile quick --models all` is the whole zoo, small.
    One grammar for every command that takes `--models`; `kinds` narrows it for a command that runs
    only CNNs or only classical models (`all` then means all of that kind; other names are refused).
    """
    classical = [f"{c}:{f}" for c in profile.classifiers for f in profile.feature_sets]
    if not spec:
        return [m for m in profile.default_models() if model_kind(m) in kinds]
    families = {"all": [*(cnns if "cnn" in kinds else []), *(classical if "classical" in kinds else [])],
                "cnn": list(cnns),
                "baselines": [m for m in cnns if m != "microcrystalnet"], "classical": classical}
    chosen: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        clf, _, fs = item.partition(":")
        if item in families:
            names = families[item]
        elif item in cnns:
            names = [item]
        elif item in classifiers:
            names = [f"{item}:{f}" for f in FEATURE_SETS]
        elif item in FEATURE_SETS:
            names = [f"{c}:{item}" for c in profile.classifiers]
        elif clf in classifiers and fs in FEATURE_SETS:
            names = [item]
        else:
            raise ValueError(
                f"unknown model {item!r}; choose CNNs ({', '.join(cnns)}), classifiers "
                f"({', '.join(classifiers)}) optionally as CLASSIFIER:{'|'.join(FEATURE_SETS)}, "
                f"feature sets, or families ({', '.join(FAMILIES)})")
        chosen += [n for n in names if n not in chosen]
    wrong = [m for m in chosen if model_kind(m) not in kinds]
    if wrong:
        raise ValueError(f"this command runs {' and '.join(kinds)} models only; got {', '.join(wrong)}")
    return sorted(chosen, key=lambda m: ":" in m)


PAPER = Profile(
    name="paper",
    description="paper protocol: 30 epochs, batch 32, every CNN at its full input size",
    epochs=30,
    batch_size=32,
)

QUICK = Profile(
    name="quick",
    description="MicroCrystalNet (16 epochs, 32 px) and 7 classifiers x 3 feature sets, 5-fold CV (~9.5 min on 2 "
                "CPU cores); --models cnn adds the five baselines at 8 epochs, 32 px (hours on a CPU)",
    epochs=8,
    batch_size=32,
    lr_patience=3,
    early_stopping_patience=4,
    recalibrate_bn=True,
    # InceptionV3 needs >= 75 px; the other keras.applications models accept 32 px.
    input_sizes={"microcrystalnet": 32, "vgg16": 32, "resnet50": 32, "inceptionv3": 75,
                 "densenet121": 32, "efficientnetb0": 32},
    epochs_per_model={"microcrystalnet": 16},
    cnn_models=("microcrystalnet",),
)

SMOKE = Profile(
    name="smoke",
    description="tests only: one epoch of a tiny MicroCrystalNet, two classifiers",
    epochs=1,
    batch_size=32,
    lr_patience=1,
    early_stopping_patience=1,
    recalibrate_bn=True,
    input_sizes={"microcrystalnet": 24},
    hparams={"microcrystalnet": {"filters": [8, 8, 16, 16], "pca_dim": 8, "fc_units": [32, 16]}},
    cnn_models=("microcrystalnet",),
    classifiers=("logreg", "knn"),
)

PROFILES = {p.name: p for p in (PAPER, QUICK, SMOKE)}


def get_profile(name: str) -> Profile:
    """The profile called `name`; an unknown name lists the known ones."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def detect_gpu(backend: str) -> str | None:
    """Name of a GPU the Keras backend can use, or None. Call after KERAS_BACKEND is set."""
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else None
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return str(gpus[0]) if gpus else None
    return None


def default_profile(backend: str) -> tuple[Profile, str]:
    """`paper` where the backend sees a GPU, else `quick`; with the reason to print."""
    gpu = detect_gpu(backend)
    if gpu:
        return PAPER, f"GPU found for the {backend} backend ({gpu})"
    return QUICK, f"no GPU found for the {backend} backend; pass --profile paper for the full protocol"
