"""TWIN (Chang et al., KDD'23, arXiv 2302.02352) in the LongCTR two-branch layout.

Long branch: consistency-preserved top-k attention — retrieval (CP-GSU) ranks every real behaviour by
exactly the relevance the ESU softmax uses — with an optional per-behaviour cross-feature bias and an
inference cache of the item projections. Short branch: multi-head target attention over the last
``short_seq_len - 1`` behaviours with their own mask.
"""
from typing import Dict, List, Optional, Sequence

import torch

from lainctr.data.loader import SequenceBatch
from lainctr.layers import LAINConfig
from lainctr.layers.twin_attention import CROSS_FEATURES, ConsistentTopKAttention, CrossFeatureBias
from lainctr.models import SequenceCTRModel


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
    branches = ("long", "short")

    def __init__(self, feature_map, model_id: str = "TWIN", attention_dim: int = 64, num_heads: int = 1,
                 attention_dropout: float = 0.0, topk: int = 50, use_short_branch: bool = True,
                 use_cross_bias: bool = False, cross_features: Sequence[str] = CROSS_FEATURES,
                 cross_embedding_dim: int = 4, category_feature: str = "cate_id",
                 lain: Optional[LAINConfig] = None, **kwargs):
        super().__init__(feature_map, model_id=model_id, lain=lain, **kwargs)
        if use_cross_bias and "same_category" in cross_features and category_feature not in self.item_features:
            raise ValueError(f"cross feature same_category needs the item feature '{category_feature}'; "
                             f"item features: {self.item_features}")
        self.category_feature = category_feature
        self.long_attention = ConsistentTopKAttention(self.token_dim, attention_dim, num_heads, topk,
                                                      attention_dropout, **self.lain_attention_kwargs("long"))
        self.cross_bias = (CrossFeatureBias(num_heads, self.max_len, cross_features, cross_embedding_dim)
                           if use_cross_bias else None)
        self.build_short_attention(use_short_branch, attention_dim, num_heads, attention_dropout)
        self._cache_version: Optional[tuple] = None
        self.build_head(self.token_dim * (2 if use_short_branch else 1))

    # ----- inference cache of the item projections ----------------------------------------------
    def precompute_item_projections(self, item_table: Dict[str, torch.Tensor]) -> None:
        """Cache W_h k and W_v k of every item row (``dataset.item_table``: {feature: (N, ...)}, row 0 = padding).

        The cache is used only in inference mode (eval, no autograd) and while no parameter has changed since;
        ``train()`` and every optimizer step drop it, and a weight load makes it stale (then ignored).
        """
        missing = [f for f in self.item_features if f not in item_table]
        if missing:
            raise KeyError(f"item_table lacks the item feature(s) {missing}")
        with torch.no_grad():
            rows = {f: item_table[f].to(self.device) for f in self.item_features}
            tokens = self.embedding_layer(rows, flatten_emb=True).view(-1, self.token_dim)
            self.long_attention.build_item_cache(tokens)
        self._cache_version = self.parameter_versions(self.parameters())

    def item_cache_valid(self) -> bool:
        return (self.inference_mode() and self.long_attention.item_cache is not None
                and self._cache_version == self.parameter_versions(self.parameters()))

    def invalidate_inference_caches(self) -> None:
        super().invalidate_inference_caches()
        self.long_attention.drop_item_cache()
        self._cache_version = None

    def embed(self, batch: SequenceBatch):
        """With a valid cache the long branch reads projections by item row: embed the short window only."""
        if not self.item_cache_valid():
            return super().embed(batch)
        batch_size, width = batch.mask.shape
        keep = min(width + 1, self.short_seq_len if self.short_attention is not None else 1)
        item_dict = {k: v.view(batch_size, width + 1, *v.shape[1:])[:, -keep:].reshape(-1, *v.shape[1:])
                     for k, v in batch.item_dict.items()}
        return super().embed(batch._replace(item_dict=item_dict))

    # ----- interests ----------------------------------------------------------------------------
    def behaviour_bias(self, batch: SequenceBatch, width: int) -> Optional[torch.Tensor]:
        """Cross-feature bias (B|1, H, T) of every behaviour, or None when ``use_cross_bias`` is off."""
        if self.cross_bias is None:
            return None
        target_category = history_category = None
        if "same_category" in self.cross_bias.features:
            category = batch.item_dict[self.category_feature].to(self.device).view(-1, width + 1)
            target_category, history_category = category[:, -1], category[:, :-1]
        return self.cross_bias(width, target_category, history_category)

    def interests(self, target, history, mask, history_length, batch) -> List[torch.Tensor]:
        conditions = self.length_conditions(mask, history_length)
        cached = self.item_cache_valid()
        item_rows = batch.item_index[:, :-1].to(self.device) if cached else None
        long = self.long_attention(target, None if cached else history, mask, conditions["long"],
                                   self.behaviour_bias(batch, mask.shape[1]), item_rows)
        top = long.index.shape[-1]   # ESU weights of the retrieved behaviours, heads side by side, prompts excluded
        self.record_attention("long", long.weights[..., :top].flatten(1), long.selected.flatten(1))
        return [long.pooled] + self.short_interest(target, history, mask, conditions["short"])
