"""DIN (Zhou et al., KDD'18) in the LongCTR two-branch layout.

Long branch: DIN's MLP activation unit over the whole (truncated) history, normalised by a masked
softmax unless ``din_use_softmax: False`` (LongCTR's sum pooling, whose norm grows with length).
Short branch: multi-head target attention over the last ``short_seq_len - 1`` behaviours.
"""
from typing import List, Optional, Sequence

import torch

from lainctr.layers import DINAttention, LAINConfig, prepend_prompts
from lainctr.models import SequenceCTRModel


class DIN(SequenceCTRModel):
    """
    Args:
        attention_hidden_units / attention_hidden_activations / attention_dropout: DIN's scoring MLP.
        din_use_softmax: masked softmax over the scores (True) or LongCTR's raw sum pooling (False).
        use_short_branch: add the short-term MHTA branch.
        attention_dim / num_heads: the short-term attention.
        **kwargs: see :class:`SequenceCTRModel`.
    """
    branches = ("long", "short")

    def __init__(self, feature_map, model_id: str = "DIN", attention_hidden_units: Sequence[int] = (64,),
                 attention_hidden_activations: str = "ReLU", attention_dropout: float = 0.0,
                 din_use_softmax: bool = True, use_short_branch: bool = True, attention_dim: int = 64,
                 num_heads: int = 1, lain: Optional[LAINConfig] = None, **kwargs):
        super().__init__(feature_map, model_id=model_id, lain=lain, **kwargs)
        self.long_attention = DINAttention(self.token_dim, attention_hidden_units, attention_hidden_activations,
                                           attention_dropout, din_use_softmax, **self.lain_attention_kwargs("long"))
        self.build_short_attention(use_short_branch, attention_dim, num_heads, attention_dropout)
        self.build_head(self.token_dim * (2 if use_short_branch else 1))

    def interests(self, target, history, mask, history_length, batch) -> List[torch.Tensor]:
        conditions = self.length_conditions(mask, history_length)
        sequence, sequence_mask = prepend_prompts(history, mask, conditions["long"])
        long_interest, weights = self.long_attention(target, sequence, sequence_mask, conditions["long"])
        self.record_attention("long", weights[:, 0, -history.shape[1]:], mask)
        return [long_interest] + self.short_interest(target, history, mask, conditions["short"])
