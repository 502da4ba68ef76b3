"""SIM (Pi et al., CIKM'20, arXiv 2006.05639) in the LongCTR two-branch layout.

GSU (general search unit): soft search, r_i = (W_a q)^T (W_b s_i), or hard search, r_i = 1[c_i = c_q]
on an item feature (the category); the top-k real behaviours by r go on (padding never beats a real
behaviour; hard search keeps matches only, most recent first). ESU (exact search unit): multi-head target
attention over the top-k. Short branch: multi-head target attention over the last short_seq_len - 1
behaviours. Soft search is trained by an auxiliary CTR loss on the pool sum_i r_i s_i.
"""
from typing import Optional, Sequence, Tuple

import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn
from torch.nn import functional as F

from lainctr.layers import LMASettings, MultiHeadTargetAttention, prepend_prompts
from lainctr.layers.attention import ConditionedLinear
from lainctr.layers.lain import BranchCondition
from lainctr.layers.retrieval import all_positions, gather_positions, masked_topk
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel

GSU_MODES = ("soft", "hard")
GSU_POOLS = ("mean", "sum")


class SearchBranch(InterestBranch):
    """GSU retrieval, then the ESU's multi-head target attention over the top-k (LAIN's prompts join the set
    after retrieval; the attention does not depend on the order of its set).

    Args:
        token_dim: d; gsu_mode / hard_search_feature / topk / gsu_pool: the GSU (see :class:`SIM`).
        attention_dim / num_heads / attention_dropout: the ESU (d_a is also the width of W_a, W_b).
        gsu_head: the auxiliary CTR head on [target, pool] (None: no GSU loss); gsu_loss_weight: its weight.
        query_length_dim: > 0 conditions the soft-search query, W_a q + W_ae e_len (``lain_gsu_query``).
        lma: the ESU's length modulation.
    """

    def __init__(self, token_dim: int, gsu_mode: str, hard_search_feature: str, topk: int, gsu_pool: str,
                 attention_dim: int, num_heads: int, attention_dropout: float, gsu_head: Optional[nn.Module],
                 gsu_loss_weight: float, query_length_dim: int, *, lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        self.gsu_mode, self.hard_search_feature, self.topk = gsu_mode, hard_search_feature, topk
        self.gsu_pool, self.gsu_loss_weight = gsu_pool, gsu_loss_weight
        if gsu_mode == "soft":
            self.W_a = ConditionedLinear(token_dim, attention_dim, query_length_dim)   # query side
            self.W_b = nn.Linear(token_dim, attention_dim, bias=False)               # behaviour side
        self.gsu_head = gsu_head
        self.attention = MultiHeadTargetAttention(token_dim, attention_dim, num_heads, attention_dropout, lma=lma)

    def gsu_scores(self, inputs: BranchInputs, condition: Optional[BranchCondition] = None) -> torch.Tensor:
        """Relevance r of every history position to the target: (B, T) (padding not yet masked)."""
        if self.gsu_mode == "hard":
            values = inputs.item_ids[self.hard_search_feature]
            return (values[:, :-1] == values[:, -1:]).to(inputs.target.dtype)
        embedding = condition.length_embedding if condition is not None else None
        query = self.W_a(inputs.target, embedding)                                 # B x d_a
        # (W_b s_i)^T q = s_i^T (W_b^T q): project the query once instead of every behaviour
        return torch.bmm(inputs.history, (query @ self.W_b.weight).unsqueeze(-1)).squeeze(-1)   # B x T

    def retrieve(self, scores: torch.Tensor, history: torch.Tensor,
                 mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-k: positions (B, k), tokens (B, k, d) and mask (B, k) (False = no real behaviour there).

        k = min(topk, T). Hard search keeps only matching behaviours, the most recent first. With T <= topk
        every position is retrieved, in place: no selection and no gather (the ESU's attention does not
        depend on the order of its set).
        """
        if scores.shape[-1] <= self.topk:
            index, selected = all_positions(scores, mask)
            return index, history, (selected & (scores >= 1) if self.gsu_mode == "hard" else selected)
        if self.gsu_mode == "hard":
            # explicit recency term in [0, 0.5): torch.topk does not order tied scores, and hard-search
            # scores are all ties; positions keep their order under extra left padding
            length = scores.shape[-1]
            scores = scores + torch.arange(length, device=scores.device, dtype=scores.dtype) / (2 * length)
        index, top_scores, selected = masked_topk(scores, mask, self.topk)
        if self.gsu_mode == "hard":
            selected = selected & (top_scores >= 1)
        return index, gather_positions(history, index), selected

    def gsu_pooled(self, scores: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sum_i r_i s_i over real behaviours (B, d); divided by L for ``gsu_pool: mean``."""
        weights = scores * mask
        if self.gsu_pool == "mean":
            weights = weights / mask.sum(-1, keepdim=True).clamp(min=1)
        return torch.bmm(weights.unsqueeze(1), history).squeeze(1)

    def gsu_loss(self, inputs: BranchInputs, scores: torch.Tensor) -> torch.Tensor:
        """The weighted auxiliary CTR loss that trains soft search (the ESU's top-k is not differentiable)."""
        pooled = self.gsu_pooled(scores, inputs.history, inputs.mask)
        y_aux = self.gsu_head(torch.cat([inputs.target, pooled], dim=-1))
        with torch.autocast(y_aux.device.type, enabled=False):   # BCE in fp32 (CUDA autocast refuses it)
            return self.gsu_loss_weight * F.binary_cross_entropy(y_aux.float(), inputs.labels, reduction="mean")

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        scores = self.gsu_scores(inputs, condition)                                # real behaviours only
        index, retrieved, retrieved_mask = self.retrieve(scores, inputs.history, inputs.mask)
        auxiliary_loss = None
        if self.gsu_head is not None and self.training and inputs.labels is not None:
            auxiliary_loss = self.gsu_loss(inputs, scores)
        sequence, sequence_mask = prepend_prompts(retrieved, retrieved_mask, condition)
        interest, weights = self.attention(inputs.target, sequence, sequence_mask, condition)
        return BranchOutput(interest, weights.mean(1)[:, -index.shape[1]:], retrieved_mask, auxiliary_loss)


class SIM(SequenceCTRModel):
    """
    Args:
        gsu_mode: ``soft`` (learned inner-product search) or ``hard`` (same value of ``hard_search_feature``).
        hard_search_feature: categorical item feature matched by hard search (the category).
        topk: behaviours retrieved by the GSU for the ESU.
        attention_dim / num_heads / attention_dropout: both multi-head target attentions; attention_dim is
            also the width of the soft-search projections W_a, W_b.
        use_short_branch: add the short-term MHTA branch.
        gsu_loss: train soft search with the auxiliary CTR loss (needs ``gsu_mode: soft``).
        gsu_loss_weight: weight of the auxiliary loss (the paper's alpha; the main loss has weight 1).
        gsu_pool: ``mean`` = sum_i r_i s_i / L over real behaviours; ``sum`` = LongCTR's unnormalised pool,
            whose norm grows with the length.
        gsu_hidden_units: hidden layers of the auxiliary CTR head on [target, pool].
        lain_gsu_query: LAIN only: the soft-search query becomes W_a q + W_ae e_len (changes the ranking;
            a key-side term would not). Needs ``use_qk_conditioning``.
        **kwargs: see :class:`~lainctr.models.SequenceCTRModel`.
    """

    def __init__(self, feature_map, model_id: str = "SIM", gsu_mode: str = "soft",
                 hard_search_feature: str = "cate_id", topk: int = 50, attention_dim: int = 64,
                 num_heads: int = 1, attention_dropout: float = 0.0, use_short_branch: bool = True,
                 gsu_loss: bool = True, gsu_loss_weight: float = 1.0, gsu_pool: str = "mean",
                 gsu_hidden_units: Sequence[int] = (64,), lain_gsu_query: bool = False, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        if gsu_mode not in GSU_MODES:
            raise ValueError(f"gsu_mode must be one of {GSU_MODES}, got '{gsu_mode}'")
        if gsu_pool not in GSU_POOLS:
            raise ValueError(f"gsu_pool must be one of {GSU_POOLS}, got '{gsu_pool}'")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if gsu_loss and gsu_loss_weight <= 0:
            raise ValueError(f"gsu_loss_weight must be > 0 (or set gsu_loss: False), got {gsu_loss_weight}")
        if gsu_mode == "hard":
            if gsu_loss:
                raise ValueError("gsu_mode: hard has no trainable search for the GSU loss; set gsu_loss: False")
            if lain_gsu_query:
                raise ValueError("lain_gsu_query conditions the soft-search query; it needs gsu_mode: soft")
            spec = feature_map.features.get(hard_search_feature, {})
            if hard_search_feature not in self.item_features or spec.get("type") != "categorical":
                raise ValueError(f"hard_search_feature '{hard_search_feature}' must be a categorical item feature; "
                                 f"item features: {self.item_features}")
        query_length_dim = 0
        if lain_gsu_query:
            query_length_dim = self.lma_settings("long").length_dim
            if query_length_dim == 0:
                raise ValueError("lain_gsu_query needs a LAIN model with use_qk_conditioning: True")
        gsu_head = (MLP_Block(input_dim=2 * self.token_dim, output_dim=1, hidden_units=list(gsu_hidden_units),
                              hidden_activations=self._head_config["hidden_activations"],
                              output_activation=self.output_activation,
                              dropout_rates=self._head_config["dropout_rates"],
                              batch_norm=self._head_config["batch_norm"])
                    if gsu_loss else None)
        self.add_branch("long", SearchBranch(self.token_dim, gsu_mode, hard_search_feature, topk, gsu_pool,
                                             attention_dim, num_heads, attention_dropout, gsu_head, gsu_loss_weight,
                                             query_length_dim, lma=self.lma_settings("long")))
        if use_short_branch:
            self.add_short_branch(attention_dim, num_heads, attention_dropout)
