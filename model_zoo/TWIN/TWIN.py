"""TWIN (Chang et al., KDD'23, arXiv 2302.02352) in the LongCTR two-branch layout.

Long branch: consistency-preserved top-k attention — retrieval (CP-GSU) ranks every real behaviour by
exactly the relevance the ESU softmax uses — with an optional per-behaviour cross-feature bias and an
inference cache of the item projections. Short branch: multi-head target attention over the last
``short_seq_len - 1`` behaviours with their own mask.
"""
from typing import Callable, Optional, Sequence

import torch

from lainctr.layers import LMASettings
from lainctr.layers.lain import BranchCondition
from lainctr.layers.twin_attention import CROSS_FEATURES, ConsistentTopKAttention, CrossFeatureBias
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel


class TopKBranch(InterestBranch):
    """CP-GSU + ESU (:class:`ConsistentTopKAttention`) with the optional cross-feature bias.

    In inference, after :meth:`prepare_inference`, behaviours are scored from cached item projections by
    item row, so the model need not embed the history for this branch.

    Args:
        token_dim: d; attention_dim / num_heads / topk / attention_dropout: the attention; lma: its LMA.
        cross_bias: TWIN's cross-feature bias, or None; category_feature: the item feature it compares.
    """

    def __init__(self, token_dim: int, attention_dim: int, num_heads: int, topk: int, attention_dropout: float,
                 cross_bias: Optional[CrossFeatureBias], category_feature: str, *, lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        self.attention = ConsistentTopKAttention(token_dim, attention_dim, num_heads, topk, attention_dropout, lma=lma)
        self.cross_bias = cross_bias
        self.category_feature = category_feature

    def uses_item_cache(self) -> bool:
        return self.attention.item_cache is not None and not self.training and not torch.is_grad_enabled()

    def token_window(self) -> Optional[int]:
        return 0 if self.uses_item_cache() else None

    def prepare_inference(self, item_tokens: Callable[[], torch.Tensor]) -> None:
        """Cache W_h k and W_v k of every item row (dropped by the model after any parameter change)."""
        self.attention.build_item_cache(item_tokens())

    def behaviour_bias(self, inputs: BranchInputs) -> Optional[torch.Tensor]:
        """Cross-feature bias (B|1, H, T) of every behaviour, or None without ``use_cross_bias``."""
        if self.cross_bias is None:
            return None
        target_category = history_category = None
        if "same_category" in self.cross_bias.features:
            category = inputs.item_ids[self.category_feature]
            target_category, history_category = category[:, -1], category[:, :-1]
        return self.cross_bias(inputs.mask.shape[1], target_category, history_category)

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        cached = self.uses_item_cache()
        long = self.attention(inputs.target, None if cached else inputs.history, inputs.mask, condition,
                              self.behaviour_bias(inputs), inputs.item_rows[:, :-1] if cached else None)
        top = long.index.shape[-1]   # ESU weights of the retrieved behaviours, heads side by side, prompts excluded
        return BranchOutput(long.pooled, long.weights[..., :top].flatten(1), long.selected.flatten(1))


class TWIN(SequenceCTRModel):
    """
    Args:
        attention_dim / num_heads / attention_dropout: both attentions (d_a split over H heads).
        topk: behaviours the CP-GSU passes to the ESU.
        use_short_branch: add the short-term MHTA branch.
        use_cross_bias: add TWIN's per-behaviour cross-feature bias to the relevance (off = the
            paper's/LongCTR's setting without cross features).
        cross_features: which derived cross features feed the bias (``recency``, ``same_category``).
        cross_embedding_dim: width of each cross-feature embedding before its scalar compression.
        category_feature: the item feature compared by ``same_category``.
        **kwargs: see :class:`SequenceCTRModel`.
    """

    def __init__(self, feature_map, model_id: str = "TWIN", attention_dim: int = 64, num_heads: int = 1,
                 attention_dropout: float = 0.0, topk: int = 50, use_short_branch: bool = True,
                 use_cross_bias: bool = False, cross_features: Sequence[str] = CROSS_FEATURES,
                 cross_embedding_dim: int = 4, category_feature: str = "cate_id", **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        if use_cross_bias and "same_category" in cross_features and category_feature not in self.item_features:
            raise ValueError(f"cross feature same_category needs the item feature '{category_feature}'; "
                             f"item features: {self.item_features}")
        cross_bias = (CrossFeatureBias(num_heads, self.max_len, cross_features, cross_embedding_dim)
                      if use_cross_bias else None)
        self.add_branch("long", TopKBranch(self.token_dim, attention_dim, num_heads, topk, attention_dropout,
                                           cross_bias, category_feature, lma=self.lma_settings("long")))
        if use_short_branch:
            self.add_short_branch(attention_dim, num_heads, attention_dropout)
