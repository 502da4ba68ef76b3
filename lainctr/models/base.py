"""The model contract: named interest branches, one head, LAIN wired into every branch that accepts it.

A model subclasses :class:`SequenceCTRModel` and, in ``__init__``, adds its branches
(``self.add_branch("long", ...)``). When ``__init__`` returns the base *assembles* the model, so nothing
has to be called last:

* the head, an MLP over ``[context, target, interest of each branch in the order they were added]``,
  sized from the branches' ``output_dim``;
* FuxiCTR's initialisation of every parameter (xavier-normal linear layers, then each module's
  ``init_weights``);
* for a LAIN model, the length conditioner, built from a random stream of its own so that the backbone's
  parameters equal the backbone's built from the same seed, and a check that every branch accepting LMA
  built its attentions with the settings the model gave it.

At each forward the base embeds the batch once (:class:`~lainctr.models.branch.BranchInputs`), hands each
conditioned branch its LAIN :class:`~lainctr.layers.lain.BranchCondition`, and returns a
:class:`ModelOutput` with the prediction, the summed auxiliary losses and every branch's output.

Training and evaluation live in :class:`lainctr.trainer.Trainer`; ``fit``/``evaluate``/``predict`` here
only hand the model to one (FuxiCTR's way of driving a model).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, cast

import numpy as np
import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from torch import nn

from ..data.loader import SequenceBatch
from ..layers.attention import LengthModulation
from ..layers.caching import InferenceCache, LengthTabulated
from ..layers.lain import NO_LMA, BranchCondition, LAINConfig, LengthConditioner, LMASettings
from ..training_options import TrainerOptions
from .branch import BranchInputs, BranchOutput, InterestBranch, ShortTermBranch

LAIN_SEED_OFFSET = 7919  # LAIN's own random stream starts at the global seed + this
TASKS = {"binary_classification": nn.Sigmoid}


class ModelOutput(NamedTuple):
    """y_pred: (B, 1) click probability; auxiliary_loss: scalar sum of the branches' (None without any);
    branches: every branch's :class:`BranchOutput` by name."""
    y_pred: torch.Tensor
    auxiliary_loss: Optional[torch.Tensor]
    branches: Dict[str, BranchOutput]


class _AssembledAfterInit(type):
    """Calls ``_assemble()`` once the outermost ``__init__`` of a model class has returned."""

    def __call__(cls, *args, **kwargs):
        model = super().__call__(*args, **kwargs)
        model._assemble()
        return model


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
            layer = cast(nn.Linear, module)
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                layer.bias.data.fill_(0)

    apply(root, default_init)
    apply(root, lambda m: m.init_weights() if hasattr(m, "init_weights") else None)


def parameter_versions(parameters) -> tuple:
    """What identifies the current values of ``parameters``: an in-place update (load_state_dict, init) bumps
    ``_version``; a replaced or moved tensor (``.to(device)``) has new storage."""
    return tuple((p.data_ptr(), p._version) for p in parameters)


class SequenceCTRModel(nn.Module, metaclass=_AssembledAfterInit):
    """Base of all models: context + target + the branches' interests -> MLP -> CTR.

    Args:
        feature_map: FuxiCTR feature map of the dataset (item features have ``source: item``).
        model_id: names the checkpoint when the model is trained through :meth:`fit`.
        embedding_dim: default embedding width of every feature.
        max_len: longest history the model sees (sizes LAIN's length encoder).
        short_seq_len: S; the short-term branch attends over the last S - 1 behaviours.
        dnn_hidden_units / dnn_activations / net_dropout / batch_norm: the head MLP.
        task: ``binary_classification`` (sigmoid output).
        lain: LAIN switches; None (or everything off) = plain backbone.
        **trainer_options: :class:`~lainctr.training_options.TrainerOptions` used by :meth:`fit` (FuxiCTR's
            way: a model built with its training options).
    """

    def __init__(self, feature_map: FeatureMap, model_id: str = "SequenceCTRModel", embedding_dim: int = 16,
                 max_len: int = 100, short_seq_len: int = 50, dnn_hidden_units: Sequence[int] = (256, 128),
                 dnn_activations: str = "ReLU", net_dropout: float = 0.0, batch_norm: bool = False,
                 task: str = "binary_classification", lain: Optional[LAINConfig] = None, **trainer_options):
        unknown = set(trainer_options) - set(TrainerOptions.keys())
        if unknown:
            from .signature import model_keys  # noqa: PLC0415 (the signature module imports this one)
            raise TypeError(f"{type(self).__name__}: unknown argument(s) {sorted(unknown)}; valid: "
                            f"{sorted(set(model_keys(type(self))) | set(TrainerOptions.keys()))}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got '{task}'")
        super().__init__()
        self.trainer_options = TrainerOptions(**trainer_options)
        self.feature_map, self.model_id = feature_map, model_id
        self.embedding_dim, self.max_len, self.short_seq_len = embedding_dim, max_len, short_seq_len
        self.output_activation = TASKS[task]()
        self.item_features = [f for f, s in feature_map.features.items() if s.get("source") == "item"]
        if not self.item_features:
            raise ValueError("the feature map has no item feature (source: item); nothing to build tokens from")
        self.token_dim = sum(feature_map.features[f].get("embedding_dim", embedding_dim) for f in self.item_features)
        self.context_dim = feature_map.sum_emb_out_dim() - self.token_dim
        self.context_features = [f for f, s in feature_map.features.items()
                                 if f not in self.item_features and f not in feature_map.labels
                                 and s["type"] != "meta"]
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.lain_config = lain if lain is not None and lain.active else None
        self.branches = nn.ModuleDict()
        self._head_config = dict(hidden_units=list(dnn_hidden_units), hidden_activations=dnn_activations,
                                 dropout_rates=net_dropout, batch_norm=batch_norm)
        self.length_conditioner: Optional[LengthConditioner] = None
        self._caches: List[InferenceCache] = []
        self._parameter_owners: List[nn.Module] = []
        self._cached_for: Optional[tuple] = None     # parameter versions the inference caches were built for

    # ----- construction ------------------------------------------------------------------------
    def lma_settings(self, branch: str) -> LMASettings:
        """The LMA settings for the attentions of the branch named ``branch`` (``NO_LMA`` in a backbone)."""
        return self.lain_config.lma_settings(branch, self.token_dim) if self.lain_config else NO_LMA

    def add_branch(self, name: str, branch: InterestBranch) -> None:
        """Add a behaviour branch; the head reads the branches' interests in the order they were added."""
        if not isinstance(branch, InterestBranch):
            raise TypeError(f"branch '{name}' is a {type(branch).__name__}, not an InterestBranch")
        if name in self.branches:
            raise ValueError(f"branch '{name}' is added twice")
        self.branches[name] = branch

    def add_short_branch(self, attention_dim: int, num_heads: int, dropout: float) -> None:
        """The zoo's short-term branch (:class:`ShortTermBranch`) under the name ``short``."""
        self.add_branch("short", ShortTermBranch(self.token_dim, self.short_seq_len, attention_dim, num_heads,
                                                 dropout, lma=self.lma_settings("short")))

    def named_branches(self) -> List[Tuple[str, InterestBranch]]:
        """The branches in the order they were added (the order of the head input)."""
        return [(name, cast(InterestBranch, branch)) for name, branch in self.branches.items()]

    def _assemble(self) -> None:
        if not self.branches:
            raise TypeError(f"{type(self).__name__} adds no branch (self.add_branch(name, branch) in __init__)")
        self._check_lma()
        interest_dim = sum(branch.output_dim for _, branch in self.named_branches())
        self.dnn = MLP_Block(input_dim=self.context_dim + self.token_dim + interest_dim, output_dim=1,
                             output_activation=self.output_activation, **self._head_config)
        self.reset_parameters()
        if self.lain_config:
            self.length_conditioner = self.build_length_conditioner()
        self._caches = [m for m in self.modules() if isinstance(m, InferenceCache)]
        self._parameter_owners = [m for m in self.modules() if m._parameters]

    def _check_lma(self) -> None:
        """Every branch's length-modulated attentions carry exactly the model's settings for that branch."""
        for name, branch in self.named_branches():
            expected = self.lma_settings(name) if branch.accepts_lma else NO_LMA
            attentions = [m for m in branch.modules() if isinstance(m, LengthModulation)]
            wrong = [type(m).__name__ for m in attentions if m.lma != expected]
            if wrong or (expected.active and not attentions):
                raise TypeError(f"branch '{name}' of {type(self).__name__}: attention(s) {wrong or '(none)'} not "
                                f"built with lma=model.lma_settings('{name}') = {expected}"
                                + ("" if branch.accepts_lma else " (the branch does not accept LMA)"))

    def build_length_conditioner(self) -> LengthConditioner:
        """LAIN's length conditioner for the branches that accept LAIN, built and initialised from a random
        stream of its own (seeded from the global seed), so that the backbone's parameters are exactly those of
        the backbone built from the same seed: a paired comparison of X and X_LAIN then measures LAIN, not
        another random start. The other LAIN parameters (length shifts, temperatures) draw no random numbers."""
        assert self.lain_config is not None
        accepting = [name for name, branch in self.named_branches() if branch.accepts_lain]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((torch.initial_seed() + LAIN_SEED_OFFSET) % 2 ** 63)
            conditioner = LengthConditioner(self.lain_config, self.token_dim, self.max_len, accepting)
            fuxictr_initialisation(conditioner)
        return conditioner

    def reset_parameters(self) -> None:
        """FuxiCTR's initialisation of the backbone, then of LAIN's length conditioner (see
        :meth:`build_length_conditioner`)."""
        fuxictr_initialisation(self, skip=self.length_conditioner)
        if self.length_conditioner is not None:
            fuxictr_initialisation(self.length_conditioner)

    def reads_time(self) -> bool:
        """Whether any branch reads the behaviours' times (loaders for this model need ``times=True``)."""
        return any(branch.reads_time() for _, branch in self.named_branches())

    @property
    def device(self) -> torch.device:
        """Where the parameters are (the trainer moves the model)."""
        return next(self.embedding_layer.parameters()).device

    # ----- inference caches -------------------------------------------------------------------
    def inference_mode(self) -> bool:
        """Eval mode without autograd: the parameters are fixed, so values computed from them can be reused."""
        return not self.training and not torch.is_grad_enabled()

    def invalidate_inference_caches(self) -> None:
        """Drop every value cached from the parameters (the trainer calls it after each optimizer step;
        ``train()`` calls it)."""
        self._cached_for = None
        for cache in self._caches:
            cache.drop_cache()

    def train(self, mode: bool = True):
        if mode:
            self.invalidate_inference_caches()
        return super().train(mode)

    def _current_versions(self) -> tuple:
        """:func:`parameter_versions` of every parameter, read from the modules that own parameters (listed once
        at assembly; a weight load with ``assign=True`` replaces parameters, not modules): every inference
        forward of a model with caches asks, so no recursive ``parameters()`` walk."""
        return parameter_versions(p for m in self._parameter_owners for p in m._parameters.values() if p is not None)

    def _caches_current(self) -> None:
        """Drop the caches if a parameter changed since they were built (e.g. a weight load). Not while
        ``torch.export`` traces the model: it traces fixed weights (``lainctr.export`` builds the caches just
        before), and its fake tensors have no storage to compare."""
        if torch.compiler.is_exporting():
            return
        if self._cached_for is not None and self._cached_for != self._current_versions():
            self.invalidate_inference_caches()

    def _mark_caches_built(self) -> None:
        self._cached_for = self._current_versions()

    def prepare_inference(self, item_table: Dict[str, torch.Tensor]) -> None:
        """Let every branch cache what depends on the item table (``dataset.item_table``: {feature: (N, ...)},
        row 0 = padding) and the current parameters; used in inference mode until a parameter changes."""
        missing = [f for f in self.item_features if f not in item_table]
        if missing:
            raise KeyError(f"item_table lacks the item feature(s) {missing}")
        self._caches_current()

        def item_tokens() -> torch.Tensor:
            rows = {f: item_table[f].to(self.device) for f in self.item_features}
            return self.embedding_layer(rows, flatten_emb=True).view(-1, self.token_dim)

        with torch.no_grad():
            for _, branch in self.named_branches():
                branch.prepare_inference(item_tokens)
        self._mark_caches_built()

    def ensure_length_tables(self, width: int) -> None:
        """Build the per-length tables of LAIN's terms for every L up to max(max_len, width), unless current.

        The tables hold the length encoder's, the prompt generators' and the temperatures' outputs; with them
        an inference batch reads its rows with one gather instead of running those modules.
        """
        assert self.length_conditioner is not None
        if self._cached_for is not None and self.length_conditioner.table_length() >= width:
            return
        lengths = torch.arange(max(width, self.max_len) + 1, device=self.device, dtype=torch.float)
        for module in self._caches:
            if isinstance(module, LengthTabulated):
                module.tabulate(lengths)
        self._mark_caches_built()

    # ----- forward ---------------------------------------------------------------------------
    def branch_inputs(self, batch: SequenceBatch, labels: Optional[torch.Tensor] = None):
        """Context embedding (B, C) and the :class:`BranchInputs` of a batch (tokens of the most recent
        behaviours the branches read, see :meth:`InterestBranch.token_window`)."""
        mask = batch.mask > 0
        batch_size, width = mask.shape
        windows = [branch.token_window() for _, branch in self.named_branches()]
        keep = width if None in windows else min(width, max(w for w in windows if w is not None))
        item_ids = {k: v.view(batch_size, width + 1, *v.shape[1:]) for k, v in batch.item_dict.items()}
        embedded = {k: item_ids[k][:, width - keep:].reshape(-1, *item_ids[k].shape[2:]) for k in self.item_features}
        tokens = self.embedding_layer(embedded, flatten_emb=True).view(batch_size, keep + 1, self.token_dim)
        context = {k: v for k, v in batch.batch_dict.items() if k in self.context_features}
        context_emb = (self.embedding_layer(context, flatten_emb=True) if context else tokens.new_zeros(batch_size, 0))
        inputs = BranchInputs(target=tokens[:, -1], history=tokens[:, :-1], mask=mask,
                              history_length=batch.history_length, item_rows=batch.item_index,
                              item_ids=item_ids, labels=labels,
                              user_index=batch.batch_dict[self.feature_map.group_id or "user_index"],
                              context=context_emb, history_time=batch.history_time, target_time=batch.target_time)
        return context_emb, inputs

    def length_conditions(self, mask: torch.Tensor, history_length: torch.Tensor) -> Dict[str, BranchCondition]:
        """LAIN's condition of every conditioned branch for this batch ({} for a plain backbone); in inference
        mode read from per-length tables (see :meth:`ensure_length_tables`)."""
        if self.length_conditioner is None:
            return {}
        tabulated = self.inference_mode() and self.length_conditioner.tabulable
        if tabulated:
            self.ensure_length_tables(mask.shape[1])
        return self.length_conditioner(mask, history_length, tabulated)

    def forward(self, batch: SequenceBatch, labels: Optional[torch.Tensor] = None) -> ModelOutput:
        """``batch`` on the model's device; ``labels`` (B, 1) only for supervised auxiliary losses."""
        if self.inference_mode():
            self._caches_current()
        context_emb, inputs = self.branch_inputs(batch, labels)
        conditions = self.length_conditions(inputs.mask, inputs.history_length)
        outputs = {}
        for name, branch in self.named_branches():
            condition = conditions.get(name)
            if condition is not None and not branch.accepts_prompts:
                condition = condition._replace(prompts=None)
            outputs[name] = branch(inputs, condition)
        y_pred = self.dnn(torch.cat([context_emb, inputs.target, *(o.interest for o in outputs.values())], dim=-1))
        losses = [o.auxiliary_loss for o in outputs.values() if o.auxiliary_loss is not None]
        return ModelOutput(y_pred, sum(losses) if losses else None, outputs)

    # ----- FuxiCTR's way of driving a model ---------------------------------------------------
    def fit(self, data_generator, epochs: int = 1, validation_data=None, max_gradient_norm: float = 10.0, **kwargs):
        """Train with a :class:`~lainctr.trainer.Trainer` built from this model's training options (FuxiCTR's
        ``fit``: early stopping on ``validation_data``, best checkpoint reloaded); returns the trainer."""
        from ..trainer import Trainer  # noqa: PLC0415 (the trainer imports the model contract)
        options = dict(vars(self.trainer_options), epochs=epochs, max_gradient_norm=max_gradient_norm, **kwargs)
        trainer = Trainer(self, TrainerOptions(**options))
        trainer.fit(data_generator, validation_data)
        return trainer

    def evaluate(self, data_generator, metrics: Optional[Sequence[str]] = None) -> Dict[str, float]:
        from ..trainer import Trainer  # noqa: PLC0415
        return Trainer(self, self.trainer_options).evaluate(data_generator, metrics)

    def predict(self, data_generator) -> np.ndarray:
        from ..trainer import Trainer  # noqa: PLC0415
        return Trainer(self, self.trainer_options).predict_arrays(data_generator)["y_pred"].astype(np.float64)

    def count_parameters(self, count_embedding: bool = True) -> int:
        """Trainable parameters; without embedding tables when ``count_embedding`` is False."""
        embedding_ids = {id(p) for p in self.embedding_layer.parameters()}
        return sum(p.numel() for p in self.parameters()
                   if p.requires_grad and (count_embedding or id(p) not in embedding_ids))
