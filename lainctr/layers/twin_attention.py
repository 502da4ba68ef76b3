"""TWIN's consistency-preserved top-k attention (CP-GSU + ESU) and its per-behaviour cross-feature bias.

TWIN (Chang et al., KDD'23, arXiv 2302.02352) retrieves with exactly the relevance its exact-search unit
attends with. Per head h::

    alpha_j = (W_q q)_h . (W_h k_j)_h / sqrt(d_head) + bias_{j,h}        for every behaviour j
    top-k j by alpha among real behaviours (CP-GSU)
    ESU     = softmax over those top-k alpha (the same numbers), values W_v k_j of the top-k only

``W_h k_j`` depends on the item alone, so it can be computed once per item row and cached
(:meth:`ConsistentTopKAttention.build_item_cache`); scoring a behaviour then costs one gather and one dot
product. User-item cross features enter only as the scalar ``bias_{j,h}`` (:class:`CrossFeatureBias`).

LAIN (spec section 5.2): e_len conditions W_q and W_h, tau(L) divides the ESU logits (never the top-k
ranking), and prompt tokens are scored by the same scorer and appended *after* the top-k selection.
"""
from __future__ import annotations

import functools
import math
import operator
from typing import NamedTuple, Optional, Sequence, cast

import torch
from torch import nn
from torch.nn import functional as F

from .attention import ConditionedLinear, LengthModulation, masked_softmax
from .caching import InferenceCache
from .lain import BranchCondition, LMASettings
from .retrieval import all_positions, masked_topk

CROSS_FEATURES = ("recency", "same_category")


class TopKAttentionOutput(NamedTuple):
    """What :class:`ConsistentTopKAttention` returns.

    Attributes:
        pooled: (B, d) interest vector.
        weights: (B, H, k + p) ESU softmax over the top-k behaviours, then the p prompts.
        index: (B, H, k) selected history positions per head (``positions``).
        selected: (B, H, k) bool, False where fewer than k real behaviours exist.
    """
    pooled: torch.Tensor
    weights: torch.Tensor
    index: torch.Tensor  # type: ignore[assignment]  # shadows tuple.index, kept for the callers
    selected: torch.Tensor


class CrossFeatureBias(nn.Module):
    """TWIN's cross-feature term sum_c beta_c * (x_{j,c} w_{h,c}), one scalar per behaviour and head.

    The batch carries no user-item cross column, so the features are derived per behaviour:

    * ``recency``: how many behaviours are more recent than j (0 = the latest), bucketed by log2
      (0, 1, 2-3, 4-7, ...); invariant to left padding.
    * ``same_category``: 1 if the behaviour's category equals the target's, else 0.

    Each feature value has an embedding x (``embedding_dim`` wide), compressed to a scalar by a per-head
    vector w_{h,c} and weighted by beta_c, as in the paper. Since every feature is categorical, the
    compression is applied to the embedding table once per forward and behaviours gather the scalars.

    Args:
        num_heads: H.
        max_len: longest history (sizes the recency buckets).
        features: subset of ``CROSS_FEATURES``.
        embedding_dim: width of each cross-feature embedding.
    """

    def __init__(self, num_heads: int, max_len: int, features: Sequence[str] = CROSS_FEATURES,
                 embedding_dim: int = 4):
        super().__init__()
        unknown = set(features) - set(CROSS_FEATURES)
        if unknown or not features:
            raise ValueError(f"cross_features must be a non-empty subset of {CROSS_FEATURES}, got {list(features)}")
        self.features = tuple(features)
        self.num_recency_buckets = int(math.floor(math.log2(max_len))) + 1
        sizes = {"recency": self.num_recency_buckets, "same_category": 2}
        self.embeddings = nn.ModuleDict({f: nn.Embedding(sizes[f], embedding_dim) for f in self.features})
        self.compression = nn.Parameter(torch.empty(num_heads, len(self.features), embedding_dim))  # w_{h,c}
        self.beta = nn.Parameter(torch.empty(len(self.features)))
        self.init_weights()

    def init_weights(self) -> None:
        for embedding in self.embeddings.values():
            nn.init.normal_(cast(nn.Embedding, embedding).weight, std=0.01)  # bias ~ 0: a fresh model starts near plain TWIN
        nn.init.normal_(self.compression, std=1.0 / math.sqrt(self.compression.shape[-1]))
        nn.init.ones_(self.beta)

    def feature_values(self, target_category: Optional[torch.Tensor], history_category: Optional[torch.Tensor],
                       width: int, device: torch.device) -> dict:
        """Integer value of every cross feature per behaviour: {name: (B or 1, T) int64}."""
        values = {}
        if "recency" in self.features:
            newer = torch.arange(width - 1, -1, -1, device=device)          # behaviours more recent than j
            values["recency"] = torch.floor(torch.log2(newer.float() + 1)).long().clamp(
                max=self.num_recency_buckets - 1).unsqueeze(0)
        if "same_category" in self.features:
            if target_category is None or history_category is None:
                raise ValueError("the same_category cross feature needs the categories of target and history")
            values["same_category"] = (history_category == target_category.unsqueeze(-1)).long()
        return values

    def forward(self, width: int, target_category: Optional[torch.Tensor] = None,
                history_category: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            width: T, the history width of the batch.
            target_category: (B,) category ids of the targets; history_category: (B, T).
        Returns:
            bias (B or 1, H, T).
        """
        device = self.beta.device
        values = self.feature_values(target_category, history_category, width, device)
        terms = []
        for c, name in enumerate(self.features):
            # (vocab, H): the scalar beta_c * (x w_{h,c}) of every value of feature c
            table = self.beta[c] * cast(nn.Embedding, self.embeddings[name]).weight @ self.compression[:, c].t()
            # F.embedding, not table[values]: indexing's backward accumulates repeated rows in a
            # nondeterministic order on the CPU; embedding's backward is deterministic
            terms.append(F.embedding(values[name], table).permute(0, 2, 1))  # (B, H, T)
        return functools.reduce(operator.add, terms)


class ItemProjectionCache(NamedTuple):
    """W_h and W_v of every item row: keys (N, d_a) and values (N, H, d_head)."""
    keys: torch.Tensor
    values: torch.Tensor


class ConsistentTopKAttention(InferenceCache, LengthModulation):
    """CP-GSU + ESU: top-k by the ESU's own relevance, softmax over the same top-k scores.

    Args:
        input_dim: token width d; attention_dim: d_a (split over ``num_heads``); topk: k.
        dropout: dropout on the ESU weights.
        lma: LAIN's length modulation (see :class:`~lainctr.layers.attention.MultiHeadTargetAttention`).
    """

    def __init__(self, input_dim: int, attention_dim: int = 64, num_heads: int = 1, topk: int = 50,
                 dropout: float = 0.0, *, lma: LMASettings):
        super().__init__(lma)
        if attention_dim % num_heads != 0:
            raise ValueError(f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.num_heads, self.head_dim, self.topk = num_heads, attention_dim // num_heads, topk
        self.W_q = ConditionedLinear(input_dim, attention_dim, lma.length_dim)
        self.W_h = ConditionedLinear(input_dim, attention_dim, lma.length_dim)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_o = nn.Linear(attention_dim, input_dim, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.item_cache: Optional[ItemProjectionCache] = None

    # ----- inference cache ---------------------------------------------------------------------
    @torch.no_grad()
    def build_item_cache(self, item_tokens: torch.Tensor) -> None:
        """Project every item row once: item_tokens (N, d) -> keys W_h k (N, d_a), values W_v k (N, H, h)."""
        self.item_cache = ItemProjectionCache(self.W_h.linear(item_tokens),
                                              self.W_v(item_tokens).view(-1, self.num_heads, self.head_dim))

    def drop_cache(self) -> None:
        self.item_cache = None

    def cache(self) -> ItemProjectionCache:
        if self.item_cache is None:
            raise RuntimeError("item_rows given but no item cache: call build_item_cache first")
        return self.item_cache

    # ----- scoring -----------------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d_a) -> (B, H, n, h)."""
        return x.view(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def scores(self, query: torch.Tensor, keys: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """alpha = q_h . k_h / sqrt(h) (+ bias): query (B, H, h), keys (B, n, d_a), bias (B|1, H, n) -> (B, H, n).

        One batched matmul of the keys with the block-diagonal query (d_a x H), so the keys are read once
        in their stored layout (no per-head transpose copy).
        """
        block_query = torch.diag_embed(query.transpose(1, 2)).transpose(1, 2)    # B x H x h x H
        block_query = block_query.reshape(query.shape[0], -1, self.num_heads)    # B x d_a x H
        scores = torch.bmm(keys, block_query).transpose(1, 2) / math.sqrt(self.head_dim)
        return scores if bias is None else scores + bias

    def behaviour_scores(self, query: torch.Tensor, sequence: Optional[torch.Tensor],
                         item_rows: Optional[torch.Tensor], key_shift_score: Optional[torch.Tensor] = None,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """alpha of every behaviour (B, H, T), from W_h [k_j; e_len] or, given ``item_rows``, the cache.

        e_len's key term W_he e is the same for every key of a row: its score ``key_shift_score`` (B, H, 1)
        (see :meth:`key_shift_score`) is added once per row.
        """
        keys = self.W_h.linear(sequence) if item_rows is None else F.embedding(item_rows, self.cache().keys)
        scores = self.scores(query, keys, bias)
        return scores if key_shift_score is None else scores + key_shift_score

    def key_shift_score(self, query: torch.Tensor, condition: Optional[BranchCondition]) -> Optional[torch.Tensor]:
        """q_h . (W_he e)_h / sqrt(h): (B, H, 1), the score every key of a row gets from e_len (None without it)."""
        shift = self.W_h.shift(condition.length_embedding if condition is not None else None)
        if shift is None:
            return None
        return (query * shift.view(query.shape)).sum(-1, keepdim=True) / math.sqrt(self.head_dim)

    def topk_values(self, sequence: Optional[torch.Tensor], item_rows: Optional[torch.Tensor],
                    index: torch.Tensor) -> torch.Tensor:
        """W_v k_j of the selected behaviours only: index (B, H, k) -> (B, H, k, h)."""
        if item_rows is not None:
            rows = torch.gather(item_rows.unsqueeze(1).expand(-1, self.num_heads, -1), 2, index)
            heads = torch.arange(self.num_heads, device=index.device).view(1, -1, 1)
            return self.cache().values[rows, heads]
        assert sequence is not None, "without item_rows the sequence is needed"
        batch_size, width, dim = sequence.shape
        tokens = torch.gather(sequence.unsqueeze(1).expand(-1, self.num_heads, -1, -1), 2,
                              index.unsqueeze(-1).expand(-1, -1, -1, dim))    # B x H x k x d
        weight = self.W_v.weight.view(self.num_heads, self.head_dim, dim)     # head h's rows of W_v
        return torch.einsum("bhkd,hed->bhke", tokens, weight)

    def all_values(self, sequence: Optional[torch.Tensor], item_rows: Optional[torch.Tensor]) -> torch.Tensor:
        """W_v k_j of every behaviour: (B, H, T, h)."""
        if item_rows is not None:
            return self.cache().values[item_rows].transpose(1, 2)
        return self._heads(self.W_v(sequence))

    def forward(self, target: torch.Tensor, sequence: Optional[torch.Tensor], mask: torch.Tensor,
                condition: Optional[BranchCondition] = None, bias: Optional[torch.Tensor] = None,
                item_rows: Optional[torch.Tensor] = None) -> TopKAttentionOutput:
        """
        Args:
            target: (B, d); sequence: (B, T, d) behaviour tokens (may be None when ``item_rows`` is given);
            mask: (B, T) bool, True = real behaviour; condition: LAIN's branch condition (prompts are
            scored like behaviours, never retrieved, always kept); bias: (B|1, H, T) cross-feature bias;
            item_rows: (B, T) item-table rows of the history: score from the item cache (must exist).
        """
        if item_rows is not None and self.item_cache is None:
            raise RuntimeError("item_rows given but no item cache: call build_item_cache first")
        e = condition.length_embedding if condition is not None else None
        query = self._heads(self.W_q(target.unsqueeze(1), e)).squeeze(2)     # B x H x h
        key_shift_score = self.key_shift_score(query, condition)            # B x H x 1, or None
        scores = self.behaviour_scores(query, sequence, item_rows, key_shift_score, bias)  # B x H x T
        if scores.shape[-1] <= self.topk:       # every behaviour is retrieved: no selection, no gathers
            (index, selected), logits = all_positions(scores, mask), scores
            values = self.all_values(sequence, item_rows)
        else:
            index, _, selected = masked_topk(scores, mask, self.topk)          # tau never touches the ranking
            logits = torch.gather(scores, -1, index)                          # finite even where not selected
            values = self.topk_values(sequence, item_rows, index)
        valid = selected
        if condition is not None and condition.prompts is not None:          # appended after retrieval
            prompts = condition.prompts
            prompt_scores = self.scores(query, self.W_h.linear(prompts))
            if key_shift_score is not None:
                prompt_scores = prompt_scores + key_shift_score
            logits = torch.cat([logits, prompt_scores], dim=-1)
            values = torch.cat([values, self._heads(self.W_v(prompts))], dim=2)
            valid = torch.cat([selected, selected.new_ones(prompt_scores.shape)], dim=-1)
        weights = masked_softmax(self.scale_logits(logits, condition), valid)
        pooled_weights = self.dropout(weights) if self.dropout is not None else weights
        out = torch.einsum("bhn,bhnd->bhd", pooled_weights, values).reshape(target.shape[0], -1)
        return TopKAttentionOutput(self.W_o(out), weights, index, selected)
