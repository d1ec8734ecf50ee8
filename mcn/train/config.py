"""The training protocol's settings, defaults from the paper (section 4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("plateau", "onecycle")
LATER_SETTINGS = {"schedule": "plateau", "warmup_fraction": 0.3, "label_smoothing": 0.0, "test_flips": False}
"""Settings added after runs were saved, with the values that keep the earlier behaviour: they enter
`settings()` (and so the run hash) only when they change results, so those runs still resume."""


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol; defaults are the paper's (4.3).

    early_stopping_patience: the paper says "several epochs"; 10 lets the LR drop (patience 5) act
        at least once before training stops.
    momentum: used by the "sgd" optimizer only.
    schedule: "plateau" is the paper's (divide the rate by 1/lr_factor when the validation loss stalls);
        "onecycle" warms the rate up linearly from learning_rate / 10 to learning_rate over the first
        warmup_fraction of the steps, then anneals it to zero along a cosine (Smith's one-cycle policy,
        as keras.optimizers.schedules.CosineDecay), and trains every epoch: early stopping would stop
        it in the high-rate phase, and the annealed end is the point of the schedule.
    label_smoothing: share of each one-hot target spread over the other classes (0: the paper's loss).
    test_flips: predict every crystal as the mean over it and its horizontal, vertical and double flip
        (a crystal has no preferred orientation in the image; 4x the inference cost).
    input_size: square patch side; None takes the model's default (`model_defaults(name)`).
    recalibrate_bn: after training, re-estimate every BatchNorm's moving statistics on training
        patches (`mcn.models.recalibrate_batchnorm`); not in the paper, for budgets of a few
        hundred steps, after which the moving averages still weigh their initial values.
    seed: fixes the folds, the balancing and the weights (fold k uses seed * 1000 + k).
    progress: per-epoch tqdm bar; does not change results, so it is not part of the run hash.
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_factor: float = 0.1
    lr_patience: int = 5
    min_lr: float = 0.0
    schedule: str = "plateau"
    warmup_fraction: float = 0.3
    label_smoothing: float = 0.0
    test_flips: bool = False
    early_stopping_patience: int = 10
    balance: bool = True
    input_size: int | None = None
    recalibrate_bn: bool = False
    seed: int = 0
    progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}.")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"need 0 <= warmup_fraction < 1 and 0 <= label_smoothing < 1; got "
                             f"{self.warmup_fraction}, {self.label_smoothing}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}.")
        if self.learning_rate <= 0 or not 0 < self.lr_factor < 1:
            raise ValueError(f"need learning_rate > 0 and 0 < lr_factor < 1; got {self.learning_rate}, "
                             f"{self.lr_factor}.")
        if self.input_size is not None and self.input_size < 8:
            raise ValueError(f"`input_size` must be >= 8 pixels; got {self.input_size}.")

    def settings(self) -> dict:
        """The fields that change results: everything but `progress`, and the `LATER_SETTINGS` only
        where they differ from their earlier behaviour (warmup_fraction under the one-cycle schedule only)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        if self.schedule != "onecycle":
            del settings["warmup_fraction"]
        return {k: v for k, v in settings.items() if k not in LATER_SETTINGS or v != LATER_SETTINGS[k]}
