"""The Trainer: the one place that touches devices, optimizers and checkpoints.

It trains a :class:`~lainctr.models.SequenceCTRModel` with FuxiCTR's semantics (``BaseModel.fit``):
validation every ``eval_steps`` training steps (default: once per epoch) on the monitored metric, the best
checkpoint kept, the learning rate divided by 10 after a validation without improvement
(``reduce_lr_on_plateau``), training stopped after ``early_stop_patience`` such validations, and the best
checkpoint reloaded at the end. On top: gradient accumulation, a per-validation training history, and
evaluation overall and per length bucket with the attention Gini, in one pass.

A run evaluates the weights it trained: if a fit writes no checkpoint (``eval_steps`` beyond the run's
steps), it fails instead of loading a file it did not write.

With a :class:`~lainctr.distributed.ProcessGroup` of several ranks (torchrun) the model trains under
``DistributedDataParallel``: each rank steps on its shard of every global batch, its loss weighted by its share
of the batch (so the averaged gradient is the global batch's mean, also when the shards differ by a row),
evaluation gathers every rank's predictions before the metrics (every rank takes the same early-stopping and
learning-rate decisions), and only rank 0 writes the checkpoint.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import metrics as metric_lib
from .analysis import extra_evaluation_columns
from .analysis.gini import gini
from .data.loader import SequenceBatch
from .data.prefetch import prefetching
from .data.row_buffer import RowBuffer
from .distributed import SINGLE_PROCESS, ProcessGroup
from .models.base import SequenceCTRModel
from .progress import progress
from .training_options import TrainerOptions
from .training_state import RESUME_FILE, atomic_torch_save, preemption_guard, restore_rng_states, rng_states

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}
FUSED = ("adam", "adamw")   # one kernel for all parameters (DIN's step on CPU: 2.9 -> 1.1 ms)
LR_DECAY_FACTOR, MIN_LR, MIN_DELTA = 0.1, 1e-6, 1e-6   # FuxiCTR's lr_decay and checkpoint_and_earlystop


class TrainingError(RuntimeError):
    """A run cannot produce weights of its own to evaluate (the message says why)."""


class Preempted(RuntimeError):
    """SIGTERM stopped the fit after a resume point was saved; ``--resume`` continues it."""


def device_of(gpu: int) -> torch.device:
    """cuda:<gpu> when asked for and available, else the CPU (FuxiCTR's ``get_device``)."""
    return torch.device(f"cuda:{gpu}") if gpu >= 0 and torch.cuda.is_available() else torch.device("cpu")


def build_optimizer(name: str, parameters, learning_rate: float) -> torch.optim.Optimizer:
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer '{name}' is not supported; choose one of {sorted(OPTIMIZERS)}")
    extra = {"fused": True} if key in FUSED else {}
    return OPTIMIZERS[key](parameters, lr=learning_rate, **extra)


def regularizer_terms(spec) -> List[tuple]:
    """FuxiCTR's regularizer spec -> [(p, weight)]: a float = L2 weight, ``l1(w)``, ``l2(w)``, ``l1_l2(w1, w2)``."""
    if not spec:
        return []
    if isinstance(spec, (int, float)):
        return [(2, float(spec))]
    text = str(spec).replace(" ", "")
    try:
        if text.startswith(("l1(", "l2(")) and text.endswith(")"):
            return [(int(text[1]), float(text[3:-1]))]
        if text.startswith("l1_l2(") and text.endswith(")"):
            l1, l2 = text[6:-1].split(",")
            return [(1, float(l1)), (2, float(l2))]
    except ValueError:
        pass
    raise ValueError(f"regularizer '{spec}' is not supported: use a float, l1(w), l2(w) or l1_l2(w1, w2)")


class Trainer:
    """Trains, validates, checkpoints and evaluates one model.

    Args:
        model: the model (moved to ``options.gpu``'s device here).
        options: the training options.
        checkpoint: file of the best weights (default ``<model_root>/<dataset_id>/<model_id>.model``).
        group: this process's rank and the number of ranks (default: one process).
    """

    def __init__(self, model: SequenceCTRModel, options: TrainerOptions, checkpoint: Optional[str] = None,
                 group: ProcessGroup = SINGLE_PROCESS):
        self.model, self.options, self.group = model, options, group
        self.device = device_of(options.gpu)
        model.to(self.device)
        self.train_module: nn.Module = model
        if group.distributed:   # parameters and buffers broadcast from rank 0; gradients averaged
            self.train_module = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(options.optimizer, model.parameters(), options.learning_rate)
        # fused kernels update parameters in place without bumping their versions: drop the caches explicitly
        self.optimizer.register_step_post_hook(lambda *_: model.invalidate_inference_caches())
        self.monitor = options.monitor_weights()
        self.checkpoint = checkpoint or os.path.abspath(os.path.join(
            options.model_root, model.feature_map.dataset_id, f"{model.model_id}.model"))
        self.history: List[Dict[str, float]] = []
        self.epoch_index = self.total_steps = 0
        self._loss_sum, self._loss_count = 0.0, 0
        self._embedding_terms = regularizer_terms(options.embedding_regularizer)
        self._net_terms = regularizer_terms(options.net_regularizer)

    def autocast(self):
        """bfloat16 autocast of forward passes with ``precision: bf16`` (weights stay fp32), else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.options.precision == "bf16")

    # ----- training ----------------------------------------------------------------------------
    def labels(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, 1) float clicks of the batch."""
        return batch.batch_dict[self.model.feature_map.labels[0]].to(self.device).float().view(-1, 1)

    def loss(self, y_pred: torch.Tensor, auxiliary_loss: Optional[torch.Tensor], labels: torch.Tensor):
        """BCE + the model's auxiliary losses + FuxiCTR's regularization terms."""
        loss = F.binary_cross_entropy(y_pred.float(), labels, reduction="mean")
        if auxiliary_loss is not None:
            loss = loss + auxiliary_loss
        if self._embedding_terms or self._net_terms:
            loss = loss + self.regularization()
        return loss

    def regularization(self) -> torch.Tensor:
        """sum (lambda / p) * ||w||_p^p over embedding tables and over all other parameters (FuxiCTR)."""
        embedding_ids = {id(p) for p in self.model.embedding_layer.parameters()}
        parts = [(weight / p) * torch.norm(param, p) ** p for param in self.model.parameters() if param.requires_grad
                 for p, weight in (self._embedding_terms if id(param) in embedding_ids else self._net_terms)]
        return torch.stack(parts).sum() if parts else torch.zeros((), device=self.device)

    def train_step(self, batch: SequenceBatch, batch_index: int, steps_per_epoch: int) -> float:
        """Forward, backward, and an optimizer step every ``accumulation_steps`` batches (and at the epoch's
        last batch); returns the batch's loss divided by ``accumulation_steps``."""
        accumulation = self.options.accumulation_steps
        batch = batch.to(self.device, non_blocking=True)
        labels = self.labels(batch)
        with self.autocast():
            out = self.train_module(batch, labels)
        loss = self.loss(out.y_pred, out.auxiliary_loss, labels) / accumulation
        if batch.global_rows:   # this rank's share of the global batch; DDP averages over the ranks
            loss = loss * (len(labels) * self.group.world_size / batch.global_rows)
        loss.backward()
        if (batch_index + 1) % accumulation == 0 or batch_index + 1 == steps_per_epoch:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.options.max_gradient_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        value = loss.item()
        self._loss_sum += value * accumulation
        self._loss_count += 1
        return value

    def fit(self, train_loader, valid_loader, resume_from: Optional[str] = None) -> None:
        """Train for ``options.epochs`` with early stopping on ``valid_loader``; reload the best checkpoint.

        ``resume_from``: a resume point (:meth:`save_resume_point`) of an interrupted fit with the same loaders:
        training continues from its batch and reaches what the uninterrupted fit would have.
        """
        self._best = np.inf if self.options.monitor_mode == "min" else -np.inf
        self._stopping_steps, self._stop, self._saved = 0, False, False
        steps_per_epoch = len(train_loader)
        self._eval_steps = self.options.eval_steps or steps_per_epoch
        self.total_steps, self._next_batch = 0, 0
        self.optimizer.zero_grad()
        if resume_from is not None:
            self.restore(resume_from)
            train_loader.epoch = self.epoch_index if train_loader.shuffle else 0
        logging.info("Start training: %d batches/epoch%s", steps_per_epoch,
                     f", resumed at epoch {self.epoch_index + 1} batch {self._next_batch}" if resume_from else "")
        with preemption_guard() as preempted:
            self._preempted = preempted
            for epoch in range(self.epoch_index if resume_from else 0, self.options.epochs):
                self.epoch_index = epoch
                self.train_epoch(train_loader, valid_loader, steps_per_epoch)
                logging.info("************ Epoch=%d end ************", epoch + 1)
                if self._stop:
                    break
        if not self._saved:
            raise TrainingError(f"no checkpoint was written: eval_steps={self._eval_steps} exceeds the run's "
                                f"{self.total_steps} training steps, so it never validated; lower eval_steps")
        logging.info("Training finished. Load best model: %s", self.checkpoint)
        self.load_weights()
        if self.group.is_writer and os.path.exists(self.resume_path):   # finished: nothing left to resume
            os.unlink(self.resume_path)

    def train_epoch(self, train_loader, valid_loader, steps_per_epoch: int) -> None:
        self.model.train()
        start, samples, train_loss = time.time(), 0, 0.0
        first, self._next_batch = self._next_batch, 0
        batches = progress(prefetching(train_loader, self.device).batches_from(first), self.options.verbose,
                           f"epoch {self.epoch_index + 1} batches", steps_per_epoch, first)
        for batch_index, batch in enumerate(batches, start=first):
            self.total_steps += 1
            samples += batch.mask.shape[0]
            train_loss += self.train_step(batch, batch_index, steps_per_epoch)
            validated = self.total_steps % self._eval_steps == 0
            if validated:
                logging.info("Train loss: %.6f (%.0f samples/s)", train_loss / self._eval_steps,
                             samples / max(time.time() - start, 1e-9))
                train_loss = 0.0
                self.validate(valid_loader)
            preempted = self._preempted()     # after the validation: a SIGTERM during it stops at this step
            if validated or preempted:          # one resume point at this position
                self.save_resume_point(batch_index + 1, steps_per_epoch)
            if preempted:
                raise Preempted(f"stopped by SIGTERM at epoch {self.epoch_index + 1} batch {batch_index + 1}; "
                                f"resume point {self.resume_path}")
            if self._stop:
                break

    def validate(self, valid_loader) -> None:
        logging.info("Evaluation @epoch %d - step %d:", self.epoch_index + 1, self.total_steps)
        logs = self.evaluate(valid_loader, list(self.monitor))
        self.checkpoint_and_earlystop(logs)
        self.model.train()

    def checkpoint_and_earlystop(self, logs: Dict[str, float]) -> None:
        """FuxiCTR's rule: an improvement by more than 1e-6 is checkpointed; otherwise the learning rate
        decays and the patience counter grows."""
        self.history.append({"epoch": self.epoch_index + 1, "step": self.total_steps,
                             "train_loss": self._loss_sum / max(self._loss_count, 1),
                             "lr": self.optimizer.param_groups[0]["lr"],
                             **{f"valid_{k}": float(v) for k, v in logs.items()}})
        self._loss_sum, self._loss_count = 0.0, 0
        value = 0.0
        for metric, weight in self.monitor.items():
            value += logs.get(metric, 0) * weight
        minimise = self.options.monitor_mode == "min"
        if (minimise and value > self._best - MIN_DELTA) or (not minimise and value < self._best + MIN_DELTA):
            self._stopping_steps += 1
            logging.info("Monitor(%s)=%.6f STOP!", self.options.monitor_mode, value)
            if self.options.reduce_lr_on_plateau:
                logging.info("Reduce learning rate on plateau: %.6f", self.decay_learning_rate())
        else:
            self._stopping_steps, self._best = 0, value
            if self.options.save_best_only:
                logging.info("Save best model: monitor(%s)=%.6f", self.options.monitor_mode, value)
                self.save_weights()
        if self._stopping_steps >= self.options.early_stop_patience:
            self._stop = True
            logging.info("********* Epoch=%d early stop *********", self.epoch_index + 1)
        if not self.options.save_best_only:
            self.save_weights()

    def decay_learning_rate(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * LR_DECAY_FACTOR, MIN_LR)
        return self.optimizer.param_groups[0]["lr"]

    # ----- resume points -----------------------------------------------------------------------
    @property
    def resume_path(self) -> str:
        """``last.ckpt`` next to the best checkpoint: everything an interrupted fit needs to continue."""
        return os.path.join(os.path.dirname(self.checkpoint), RESUME_FILE)

    def save_resume_point(self, next_batch: int, steps_per_epoch: int) -> None:
        """Model, optimizer (with the decayed learning rate), counters, history and every rank's RNG states,
        positioned before batch ``next_batch`` of this epoch; written atomically by rank 0."""
        epoch, next_batch = (self.epoch_index + 1, 0) if next_batch >= steps_per_epoch else (self.epoch_index, next_batch)
        rng = self.group.gather_objects(rng_states())
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng,
                 "counters": {"epoch_index": epoch, "next_batch": next_batch, "total_steps": self.total_steps,
                              "best": self._best, "stopping_steps": self._stopping_steps, "stop": self._stop,
                              "saved": self._saved, "loss_sum": self._loss_sum, "loss_count": self._loss_count},
                 "history": self.history}
        if self.group.is_writer:
            atomic_torch_save(state, self.resume_path)
        self.group.barrier()

    def restore(self, path: str) -> None:
        """The state of :meth:`save_resume_point` (``path``), into this trainer and its model."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        counters = state["counters"]
        self.epoch_index, self._next_batch, self.total_steps = (counters["epoch_index"], counters["next_batch"],
                                                                counters["total_steps"])
        self._best, self._stopping_steps, self._stop = counters["best"], counters["stopping_steps"], counters["stop"]
        self._saved, self._loss_sum, self._loss_count = counters["saved"], counters["loss_sum"], counters["loss_count"]
        self.history = list(state["history"])
        if len(state["rng"]) != self.group.world_size:
            raise TrainingError(f"{path} was written by {len(state['rng'])} process(es); resume it with as many")
        restore_rng_states(state["rng"][self.group.rank])

    # ----- checkpoints -------------------------------------------------------------------------
    def save_weights(self) -> None:
        """The model's state dict, written (by rank 0) to a temporary file and renamed: never half-written."""
        if self.group.is_writer:
            self._write_checkpoint()
        self.group.barrier()
        self._saved = True

    def _write_checkpoint(self) -> None:
        atomic_torch_save(self.model.state_dict(), self.checkpoint)

    def load_weights(self, checkpoint: Optional[str] = None) -> None:
        state = torch.load(checkpoint or self.checkpoint, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.to(self.device)

    # ----- inference ---------------------------------------------------------------------------
    def prepare_inference(self, item_table: Dict[str, torch.Tensor]) -> None:
        """The model's inference caches (e.g. TWIN's item projections) from the current weights."""
        self.model.eval()
        self.model.prepare_inference(item_table)

    def predict_arrays(self, loader, attention_branch: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Predictions with what evaluation needs: y_pred, y_true (NaN without labels), group (user), history_length
        (N,) each, in the loader's order on every rank (under data parallelism too: the ranks' shards are put back
        batch by batch).

        With ``attention_branch`` (e.g. ``"long"``) the same pass also returns ``gini`` (N,): the attention
        Gini of that branch per sample, when the branch reports its attention.
        """
        model = self.model
        model.eval()
        label, group_id = model.feature_map.labels[0], model.feature_map.group_id or "user_index"
        out, batch_rows = RowBuffer(), []
        with torch.no_grad():
            for batch in progress(prefetching(loader, self.device), self.options.verbose, "evaluate batches"):
                with self.autocast():
                    result = model(batch.to(self.device, non_blocking=True))
                out.add("y_pred", result.y_pred.float().cpu().numpy().reshape(-1))
                labels = batch.batch_dict.get(label)          # none for new samples to score
                out.add("y_true", np.full(len(batch.history_length), np.nan) if labels is None
                        else labels.numpy().reshape(-1))
                out.add("group", batch.batch_dict[group_id].numpy().reshape(-1))
                out.add("history_length", batch.history_length.numpy().reshape(-1))
                batch_rows.append(len(batch.history_length))
                branch = result.branches.get(attention_branch) if attention_branch else None
                if branch is not None and branch.attention is not None:
                    out.add("gini", gini(branch.attention.detach().float().cpu(), branch.support.cpu()))
        arrays = out.arrays()
        for name in ("y_pred", "y_true", "group", "history_length"):   # an empty split
            arrays.setdefault(name, np.zeros(0))
        if not self.group.all_true(out.filled("gini") == out.filled("y_pred") > 0):   # every batch, every rank
            arrays.pop("gini", None)
        return self.group.gather_in_batch_order(arrays, batch_rows)

    def evaluate(self, loader, metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """The metrics (default: ``options.metrics``) of the model on ``loader``."""
        arrays = self.predict_arrays(loader)
        logs = metric_lib.evaluate_metrics(arrays["y_true"].astype(np.float64), arrays["y_pred"].astype(np.float64),
                                           list(metrics or self.options.metrics), arrays["group"])
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
        return logs

    def evaluate_split(self, loader, split: str,
                       buckets: Sequence[int]) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
        """(columns, predictions) from one pass over ``loader``: ``{split}_{metric}``, per length bucket
        ``{split}_{metric}@{low}-{high}``, sample/user shares and the long branch's attention Gini per bucket;
        and that pass's :meth:`predict_arrays` (e.g. to keep them)."""
        arrays = self.predict_arrays(loader, attention_branch="long")
        y_true, y_pred = arrays["y_true"].astype(np.float64), arrays["y_pred"].astype(np.float64)
        metrics = list(self.options.metrics)
        columns = {f"{split}_{k}": v for k, v in
                   metric_lib.evaluate_metrics(y_true, y_pred, metrics, arrays["group"]).items()}
        columns.update({f"{split}_{k}": v for k, v in metric_lib.bucket_metrics(
            y_true, y_pred, arrays["group"], arrays["history_length"], buckets, metrics).items()})
        columns.update(extra_evaluation_columns(arrays, split, buckets))
        return columns, arrays
