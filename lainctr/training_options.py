"""The training options of an expid (no torch import: the config layer reads them).

Every key is FuxiCTR's, with FuxiCTR's meaning (``BaseModel.fit``), plus ``accumulation_steps``. The
values are checked here, with the key, the value and what is expected in the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Dict, Optional, Tuple, Union

from .metrics import DEFAULT_METRICS
from .metrics import METRICS as SUPPORTED_METRICS

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad", "rmsprop")   # torch.optim classes, by lower-case name
LOSSES = ("binary_crossentropy", "bce", "binary_cross_entropy")
PRECISIONS = ("fp32", "bf16")


class OptionError(ValueError):
    """A training option has a wrong type or value; the message names key, value and what is allowed."""


@dataclass(frozen=True)
class TrainerOptions:
    """How a model is trained and evaluated.

    Attributes:
        epochs: passes over the training split (>= 1).
        optimizer / learning_rate / loss: as FuxiCTR (Adam and AdamW use torch's fused kernel).
        accumulation_steps: gradient accumulation: one optimizer step every N batches (and at an epoch's end).
        max_gradient_norm: gradient clipping (total L2 norm).
        embedding_regularizer / net_regularizer: FuxiCTR's regularizers (0 = none; a float = L2 weight,
            or ``l1(w)``, ``l2(w)``, ``l1_l2(w1, w2)``).
        monitor / monitor_mode: the validation metric (or ``{metric: weight}``) that selects the best
            checkpoint, ``max`` or ``min``.
        early_stop_patience: stop after this many validations without improvement.
        eval_steps: validate every N training steps (None = once per epoch).
        reduce_lr_on_plateau: divide the learning rate by 10 (down to 1e-6) after a validation without
            improvement.
        save_best_only: checkpoint only improvements (False: after every validation).
        metrics: the evaluation metrics.
        verbose: 0 = silent, 1 = progress and per-epoch lines.
        model_root: where checkpoints, logs and histories go (``<model_root>/<dataset_id>/``).
        gpu: -1 = CPU, N = cuda:N.
        precision: ``fp32``, or ``bf16``: forward passes under autocast (bfloat16 matmuls, fp32 weights,
            softmaxes, losses and metrics).
    """
    epochs: int = 1
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "binary_crossentropy"
    accumulation_steps: int = 1
    max_gradient_norm: float = 10.0
    embedding_regularizer: Union[float, str, None] = 0
    net_regularizer: Union[float, str, None] = 0
    monitor: Union[str, Dict[str, float]] = "AUC"
    monitor_mode: str = "max"
    early_stop_patience: int = 2
    eval_steps: Optional[int] = None
    reduce_lr_on_plateau: bool = True
    save_best_only: bool = True
    metrics: Tuple[str, ...] = field(default=DEFAULT_METRICS)
    verbose: int = 1
    model_root: str = "./checkpoints"
    gpu: int = -1
    precision: str = "fp32"

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        _expect("epochs", self.epochs, int, "an integer >= 1", lambda v: v >= 1)
        _expect("learning_rate", self.learning_rate, (int, float), "a number > 0 (YAML reads 1e-3 as a string; "
                "write 1.e-3)", lambda v: v > 0)
        _expect("optimizer", self.optimizer, str, f"one of {OPTIMIZERS}", lambda v: v.lower() in OPTIMIZERS)
        _expect("loss", self.loss, str, f"one of {LOSSES}", lambda v: v in LOSSES)
        _expect("accumulation_steps", self.accumulation_steps, int, "an integer >= 1", lambda v: v >= 1)
        _expect("max_gradient_norm", self.max_gradient_norm, (int, float), "a number > 0", lambda v: v > 0)
        _expect("monitor_mode", self.monitor_mode, str, "'max' or 'min'", lambda v: v in ("max", "min"))
        _expect("early_stop_patience", self.early_stop_patience, int, "an integer >= 1", lambda v: v >= 1)
        if self.eval_steps is not None:
            _expect("eval_steps", self.eval_steps, int, "an integer >= 1 or null", lambda v: v >= 1)
        _expect("verbose", self.verbose, int, "0 or 1", lambda v: v >= 0)
        _expect("gpu", self.gpu, int, "-1 (CPU) or a CUDA device index", lambda v: v >= -1)
        _expect("precision", self.precision, str, f"one of {PRECISIONS}", lambda v: v in PRECISIONS)
        monitored = [self.monitor] if isinstance(self.monitor, str) else list(self.monitor or [])
        unknown = [m for m in list(self.metrics) + monitored if m not in SUPPORTED_METRICS]
        if unknown or not monitored:
            raise OptionError(f"metrics/monitor: unknown metric(s) {unknown or self.monitor!r}; "
                              f"supported: {list(SUPPORTED_METRICS)}")

    def monitor_weights(self) -> Dict[str, float]:
        """``{metric: weight}`` whose weighted sum is the monitored value (FuxiCTR's ``Monitor``)."""
        return {self.monitor: 1.0} if isinstance(self.monitor, str) else dict(self.monitor)


def _expect(key: str, value, types, expected: str, check) -> None:
    if isinstance(value, bool) or not isinstance(value, types) or not check(value):
        raise OptionError(f"{key}: {value!r} ({type(value).__name__}) is not {expected}")
