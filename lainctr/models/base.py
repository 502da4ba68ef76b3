"""The one base class of every long-sequence model: batch contract, embeddings, head, training glue.

Subclasses define their interest modules and :meth:`SequenceCTRModel.interests`; everything else —
moving a :class:`~lainctr.data.loader.SequenceBatch` to the device, embedding the ``B x (T+1)`` item
tokens, the short-term window, the final MLP, gradient accumulation, vectorised evaluation with length
buckets, the training history — lives here once (FuxiCTR repeats it in every LongCTR model).
"""
from __future__ import annotations

import inspect
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from torch import nn
from tqdm import tqdm

from .. import metrics as metric_lib
from ..analysis.gini import gini
from ..data.loader import SequenceBatch
from ..layers.attention import LengthTemperature, MultiHeadTargetAttention
from ..layers.lain import BranchCondition, LAINConfig, LengthConditioner, prepend_prompts


# FuxiCTR BaseModel options a model accepts besides its own keys (anything else is a typo).
TRAINER_KEYS = frozenset({"task", "monitor", "monitor_mode", "save_best_only", "early_stop_patience", "eval_steps",
                          "embedding_regularizer", "net_regularizer", "reduce_lr_on_plateau", "verbose",
                          "model_root", "metrics"})


LAIN_SEED_OFFSET = 7919  # LAIN's own random stream starts at the global seed + this


def fuxictr_initialisation(root: nn.Module, skip: Optional[nn.Module] = None) -> None:
    """FuxiCTR's ``BaseModel.reset_parameters`` on ``root`` without the subtree ``skip``: xavier-normal weights and
    zero biases of every ``nn.Linear``/``nn.Conv1d`` (exact type), then every module's ``init_weights()``, each
    pass children before parents, as ``nn.Module.apply``."""
    def apply(module: nn.Module, fn) -> None:
        for child in module.children():
            if child is not skip:
                apply(child, fn)
        fn(module)

    def default_init(module: nn.Module) -> None:
        if type(module) in (nn.Linear, nn.Conv1d):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                module.bias.data.fill_(0)

    apply(root, default_init)
    apply(root, lambda m: m.init_weights() if hasattr(m, "init_weights") else None)


class SequenceCTRModel(BaseModel):
    """Base of all models: context + target + interest vectors -> MLP -> CTR.

    Args:
        feature_map: FuxiCTR feature map of the dataset (item features have ``source: item``).
        model_id: expid, names the checkpoint.
        gpu: -1 for CPU, else the CUDA device index.
        embedding_dim: default embedding width of every feature.
        max_len: longest history the model sees (sizes LAIN's length encoder).
        short_seq_len: S; the short-term branch attends over the last S - 1 behaviours.
        dnn_hidden_units / dnn_activations / net_dropout / batch_norm: the final MLP.
        learning_rate / optimizer / loss: as FuxiCTR.
        accumulation_steps: gradient accumulation (optimizer steps every N batches).
        lain: LAIN switches; None (or everything off) = plain backbone.
        **trainer_kwargs: FuxiCTR BaseModel options (monitor, early_stop_patience, model_root, ...).
    """
    branches: Tuple[str, ...] = ("long",)  # behaviour branches LAIN can condition

    def __init__(self, feature_map: FeatureMap, model_id: str = "SequenceCTRModel", gpu: int = -1,
                 embedding_dim: int = 16, max_len: int = 100, short_seq_len: int = 50,
                 dnn_hidden_units: Sequence[int] = (256, 128), dnn_activations: str = "ReLU",
                 net_dropout: float = 0.0, batch_norm: bool = False, learning_rate: float = 1e-3,
                 optimizer: str = "adam", loss: str = "binary_crossentropy", accumulation_steps: int = 1,
                 lain: Optional[LAINConfig] = None, **trainer_kwargs):
        unknown = set(trainer_kwargs) - TRAINER_KEYS
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown argument(s) {sorted(unknown)}; "
                            f"valid: {sorted(type(self).config_keys() | TRAINER_KEYS)}")
        trainer_kwargs.setdefault("verbose", 1)
        trainer_kwargs.setdefault("metrics", ["AUC", "gAUC", "logloss"])
        trainer_kwargs.setdefault("model_root", "./checkpoints")
        super().__init__(feature_map, model_id=model_id, gpu=gpu, **trainer_kwargs)
        if short_seq_len < 2:
            raise ValueError(f"short_seq_len must be >= 2 (the window holds short_seq_len - 1 items), got {short_seq_len}")
        self.embedding_dim, self.max_len, self.short_seq_len = embedding_dim, max_len, short_seq_len
        self.accumulation_steps = accumulation_steps
        self.item_features = [f for f, s in feature_map.features.items() if s.get("source") == "item"]
        if not self.item_features:
            raise ValueError("the feature map has no item feature (source: item); nothing to build tokens from")
        self.token_dim = sum(feature_map.features[f].get("embedding_dim", embedding_dim) for f in self.item_features)
        self.context_dim = feature_map.sum_emb_out_dim() - self.token_dim
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.lain_config = lain if lain is not None and lain.active else None
        self.length_conditioner: Optional[LengthConditioner] = None   # built by build_head, after the backbone
        self._learning_rate, self._optimizer_name, self._loss_name = learning_rate, optimizer, loss
        self._head_config = dict(hidden_units=list(dnn_hidden_units), hidden_activations=dnn_activations,
                                 dropout_rates=net_dropout, batch_norm=batch_norm)
        self.auxiliary_outputs: Dict[str, torch.Tensor] = {}  # e.g. "auxiliary_loss", set in interests()
        self.capture_attention = False
        self.attention_records: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.training_history: List[Dict[str, float]] = []
        self._length_table_modules: List[nn.Module] = []   # set by build_head, once every layer exists
        self._length_tables_version: Optional[tuple] = None
        self._loss_sum, self._loss_count = 0.0, 0

    # ----- construction helpers for subclasses -------------------------------------------------
    def lain_attention_kwargs(self, branch: str) -> Dict[str, object]:
        """Extra constructor kwargs that make an attention of ``branch`` length-modulated (or {})."""
        return self.lain_config.attention_kwargs(branch, self.token_dim) if self.lain_config else {}

    def build_short_attention(self, use_short_branch: bool, attention_dim: int, num_heads: int,
                              dropout: float) -> None:
        """The short-term branch: MHTA over the last S - 1 behaviours (length-modulated in a LAIN model)."""
        self.short_attention = (MultiHeadTargetAttention(self.token_dim, attention_dim, num_heads, dropout,
                                                         **self.lain_attention_kwargs("short"))
                                if use_short_branch else None)

    def build_head(self, interest_dim: int) -> None:
        """The final MLP over [context, target, interests]; call once all layers exist, it also compiles."""
        self.dnn = MLP_Block(input_dim=self.context_dim + self.token_dim + interest_dim, output_dim=1,
                             output_activation=self.output_activation, **self._head_config)
        self.reset_parameters()
        if self.lain_config:
            self.length_conditioner = self.build_length_conditioner()
        self._length_table_modules = [m for m in self.modules()
                                      if isinstance(m, (LengthConditioner, LengthTemperature))]
        self.compile(self._optimizer_name, self._loss_name, self._learning_rate)
        self.model_to_device()

    def build_length_conditioner(self) -> LengthConditioner:
        """LAIN's length conditioner, built and initialised from a random stream of its own (seeded from the
        global seed), so that the backbone's parameters are exactly those of the backbone built from the same
        seed: a paired comparison of X and X_LAIN then measures LAIN, not another random start. The other LAIN
        parameters (length shifts, temperatures) draw no random numbers."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((torch.initial_seed() + LAIN_SEED_OFFSET) % 2 ** 63)
            conditioner = LengthConditioner(self.lain_config, self.token_dim, self.max_len, self.branches)
            fuxictr_initialisation(conditioner)
        return conditioner

    def reset_parameters(self) -> None:
        """FuxiCTR's initialisation of the backbone, then of LAIN's length conditioner (see
        :meth:`build_length_conditioner`)."""
        fuxictr_initialisation(self, skip=self.length_conditioner)
        if self.length_conditioner is not None:
            fuxictr_initialisation(self.length_conditioner)

    def compile(self, optimizer, loss, lr: float) -> None:
        """FuxiCTR's ``compile``, except that Adam and AdamW use torch's fused kernel: one update for all
        parameters instead of about ten small ops per parameter tensor (the same update up to float
        rounding; the step of DIN at max_len 200 on CPU got 2 ms faster). Every optimizer step drops the
        inference caches: fused kernels update parameters in place without bumping their version counters."""
        super().compile(optimizer, loss, lr)
        if type(self.optimizer) in (torch.optim.Adam, torch.optim.AdamW):
            self.optimizer = type(self.optimizer)(self.parameters(), lr=lr, fused=True)
        self.optimizer.register_step_post_hook(lambda *_: self.invalidate_inference_caches())

    # ----- inference caches ------------------------------------------------------------------
    def inference_mode(self) -> bool:
        """Eval mode without autograd: the parameters are fixed, so values computed from them can be reused."""
        return not self.training and not torch.is_grad_enabled()

    @staticmethod
    def parameter_versions(parameters) -> tuple:
        """What identifies the current values of ``parameters``: an in-place update (load_state_dict, init)
        bumps ``_version``; a replaced or moved tensor (``.to(device)``) has new storage."""
        return tuple((p.data_ptr(), p._version) for p in parameters)

    def invalidate_inference_caches(self) -> None:
        """Drop every value cached from the parameters (after each optimizer step and on ``train()``)."""
        self._length_tables_version = None
        for module in self.length_table_modules():
            module.drop_table()

    def train(self, mode: bool = True):
        if mode:
            self.invalidate_inference_caches()
        return super().train(mode)

    def length_table_modules(self) -> List[nn.Module]:
        """The modules whose outputs depend on L alone (length conditioner, temperatures): their
        per-length tables serve inference."""
        return self._length_table_modules

    def ensure_length_tables(self, width: int) -> None:
        """Build the per-length tables of LAIN's terms for every L up to max(max_len, width), unless current.

        The tables hold the length encoder's, the prompt generators' and the temperatures' outputs; with them
        an inference batch reads its rows with one gather instead of running those modules.
        """
        modules = self.length_table_modules()
        versions = self.parameter_versions(p for m in modules for p in m.parameters())
        if versions == self._length_tables_version and self.length_conditioner.table_length() >= width:
            return
        lengths = torch.arange(max(width, self.max_len) + 1, device=self.device, dtype=torch.float)
        for module in modules:
            module.tabulate(lengths)
        self._length_tables_version = versions

    @classmethod
    def config_keys(cls) -> set:
        """Every constructor keyword of the class and its bases: the model keys a YAML may set."""
        keys = set()
        for klass in cls.__mro__:
            if klass is BaseModel or not issubclass(klass, SequenceCTRModel):
                continue
            keys |= {p for p in inspect.signature(klass.__init__).parameters
                     if p not in ("self", "feature_map", "trainer_kwargs", "kwargs", "lain")}
        return keys | set(getattr(cls, "extra_config_keys", ()))

    # ----- forward ---------------------------------------------------------------------------
    def embed(self, batch: SequenceBatch):
        """Context embedding (B, C), item tokens (B, T+1, d), mask (B, T) bool, history length (B,)."""
        mask = batch.mask.to(self.device) > 0
        items = {k: v.to(self.device) for k, v in batch.item_dict.items() if k in self.item_features}
        tokens = self.embedding_layer(items, flatten_emb=True).view(mask.shape[0], -1, self.token_dim)
        context = {k: v.to(self.device) for k, v in batch.batch_dict.items()
                   if k in self.feature_map.features and k not in self.feature_map.labels
                   and self.feature_map.features[k]["type"] != "meta"}
        context_emb = (self.embedding_layer(context, flatten_emb=True) if context
                       else tokens.new_zeros(mask.shape[0], 0))
        return context_emb, tokens, mask, batch.history_length.to(self.device)

    def length_conditions(self, mask: torch.Tensor, history_length: torch.Tensor) -> Dict[str, Optional[BranchCondition]]:
        """LAIN's per-branch conditions for this batch (all None for a plain backbone); in inference mode
        read from per-length tables (see :meth:`ensure_length_tables`)."""
        if self.length_conditioner is None:
            return {b: None for b in ("long", "short")}
        tabulated = self.inference_mode() and self.length_conditioner.tabulable
        if tabulated:
            self.ensure_length_tables(mask.shape[1])
        return self.length_conditioner(mask, history_length, tabulated)

    def short_window(self, history: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The last S - 1 behaviours and *their own* mask (LongCTR's mask is shifted by one here).

        history: (B, T, d), mask: (B, T) -> (B, min(T, S-1), d), (B, min(T, S-1)).
        """
        width = min(self.short_seq_len - 1, history.shape[1])
        return history[:, -width:], mask[:, -width:]

    def short_interest(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                       condition: Optional[BranchCondition]) -> List[torch.Tensor]:
        """[] without a short branch, else [the short-term interest (B, d)] (prompts prepended with LAIN)."""
        if self.short_attention is None:
            return []
        short, short_mask = prepend_prompts(*self.short_window(history, mask), condition)
        return [self.short_attention(target, short, short_mask, condition)[0]]

    def interests(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                  history_length: torch.Tensor, batch: SequenceBatch) -> List[torch.Tensor]:
        """Interest vectors of the model, each (B, d_i); implemented by every model."""
        raise NotImplementedError

    def forward(self, batch: SequenceBatch) -> Dict[str, torch.Tensor]:
        context_emb, tokens, mask, history_length = self.embed(batch)
        target, history = tokens[:, -1], tokens[:, :-1]
        interests = self.interests(target, history, mask, history_length, batch)
        y_pred = self.dnn(torch.cat([context_emb, target, *interests], dim=-1))
        out = {"y_pred": y_pred}
        out.update(self.auxiliary_outputs)
        self.auxiliary_outputs = {}
        return out

    def record_attention(self, name: str, weights: torch.Tensor, support: torch.Tensor) -> None:
        """Keep a branch's attention (B, n) over its support (B, n) bool for analysis (e.g. Gini).

        Only real behaviours belong in ``support`` (prompts excluded); stored only while
        ``capture_attention`` is on, detached and on the CPU.
        """
        if self.capture_attention:
            self.attention_records[name] = (weights.detach().float().cpu(), support.detach().cpu())

    # ----- training glue over FuxiCTR's BaseModel --------------------------------------------
    def get_labels(self, batch: SequenceBatch) -> torch.Tensor:
        return batch.batch_dict[self.feature_map.labels[0]].to(self.device).float().view(-1, 1)

    def get_group_id(self, batch: SequenceBatch) -> torch.Tensor:
        return batch.batch_dict[self.feature_map.group_id or "user_index"]

    def add_loss(self, return_dict: Dict[str, torch.Tensor], y_true: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(return_dict["y_pred"], y_true, reduction="mean")
        return loss + return_dict.get("auxiliary_loss", 0.0)

    def train_step(self, batch: SequenceBatch) -> torch.Tensor:
        loss = self.compute_loss(self.forward(batch), self.get_labels(batch)) / self.accumulation_steps
        loss.backward()
        if (self._batch_index + 1) % self.accumulation_steps == 0 or self._batch_index + 1 == self._steps_per_epoch:
            nn.utils.clip_grad_norm_(self.parameters(), self._max_gradient_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self._loss_sum += loss.item() * self.accumulation_steps
        self._loss_count += 1
        return loss

    def checkpoint_and_earlystop(self, logs: Dict[str, float], min_delta: float = 1e-6) -> None:
        self.training_history.append({"epoch": self._epoch_index + 1, "step": self._total_steps,
                                      "train_loss": self._loss_sum / max(self._loss_count, 1),
                                      "lr": self.optimizer.param_groups[0]["lr"],
                                      **{f"valid_{k}": float(v) for k, v in logs.items()}})
        self._loss_sum, self._loss_count = 0.0, 0
        super().checkpoint_and_earlystop(logs, min_delta)

    def fit(self, data_generator, epochs: int = 1, validation_data=None, max_gradient_norm: float = 10.0, **kwargs):
        """FuxiCTR's fit loop (train epochs, evaluate every ``eval_steps``, early stopping, reload the best
        checkpoint), restated because FuxiCTR 2.3.9's uses ``np.Inf``, which NumPy 2 removed."""
        self.valid_gen = validation_data
        self._max_gradient_norm = max_gradient_norm
        self._best_metric = np.inf if self._monitor_mode == "min" else -np.inf
        self._stopping_steps, self._stop_training = 0, False
        self._steps_per_epoch = len(data_generator)
        self._total_steps = self._batch_index = self._epoch_index = 0
        if self._eval_steps is None:
            self._eval_steps = self._steps_per_epoch
        self.optimizer.zero_grad()
        logging.info("Start training: %d batches/epoch", self._steps_per_epoch)
        for epoch in range(epochs):
            self._epoch_index = epoch
            self.train_epoch(data_generator)
            logging.info("************ Epoch=%d end ************", epoch + 1)
            if self._stop_training:
                break
        logging.info("Training finished. Load best model: %s", self.checkpoint)
        self.load_weights(self.checkpoint)

    def predict_arrays(self, data_generator, attention_branch: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Predictions with what evaluation needs: y_pred, y_true, group (user), history_length.

        With ``attention_branch`` (e.g. ``"long"``) the same pass also returns ``gini`` (N,): the attention
        Gini of that branch per sample, when the model records that branch's attention.
        """
        self.eval()
        label = self.feature_map.labels[0]
        out: Dict[str, list] = {"y_pred": [], "y_true": [], "group": [], "history_length": [], "gini": []}
        previous, self.capture_attention = self.capture_attention, attention_branch is not None
        iterator = tqdm(data_generator, desc="evaluate", leave=False) if self._verbose > 0 else data_generator
        try:
            with torch.no_grad():
                for batch in iterator:
                    self.attention_records.clear()
                    out["y_pred"].append(self.forward(batch)["y_pred"].float().cpu().numpy().reshape(-1))
                    out["y_true"].append(batch.batch_dict[label].numpy().reshape(-1))
                    out["group"].append(self.get_group_id(batch).numpy().reshape(-1))
                    out["history_length"].append(batch.history_length.numpy().reshape(-1))
                    if attention_branch in self.attention_records:
                        out["gini"].append(gini(*self.attention_records[attention_branch]))
        finally:
            self.capture_attention = previous
            self.attention_records.clear()
        arrays = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items() if k != "gini"}
        if out["gini"] and len(out["gini"]) == len(out["y_pred"]):
            arrays["gini"] = np.concatenate(out["gini"])
        return arrays

    def evaluate(self, data_generator, metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
        arrays = self.predict_arrays(data_generator)
        logs = metric_lib.evaluate_metrics(arrays["y_true"].astype(np.float64), arrays["y_pred"].astype(np.float64),
                                           metrics or self.validation_metrics, arrays["group"])
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()))
        return logs

    def lain_parameters(self) -> List[nn.Parameter]:
        """Trainable parameters that exist only because of LAIN: the length conditioner, temperatures and
        every module's ``lain_parameters()`` (empty for a backbone)."""
        found = {}
        for module in self.modules():
            if isinstance(module, (LengthConditioner, LengthTemperature)):
                params = module.parameters()
            elif module is not self and hasattr(module, "lain_parameters"):
                params = module.lain_parameters()
            else:
                continue
            found.update({id(p): p for p in params if p.requires_grad})
        return list(found.values())

    def lain_parameter_count(self) -> int:
        return sum(p.numel() for p in self.lain_parameters())

    def count_parameters(self, count_embedding: bool = True) -> int:
        """Trainable parameters; without embedding tables when ``count_embedding`` is False."""
        embedding_ids = {id(p) for p in self.embedding_layer.parameters()}
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad and (count_embedding or id(p) not in embedding_ids))
