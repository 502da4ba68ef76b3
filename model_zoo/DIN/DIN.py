"""DIN (Zhou et al., KDD'18) in the LongCTR two-branch layout.

Long branch: DIN's MLP activation unit over the whole (truncated) history, normalised by a masked
softmax unless ``din_use_softmax: False`` (LongCTR's sum pooling, whose norm grows with length).
Short branch: multi-head target attention over the last ``short_seq_len - 1`` behaviours.
"""
from typing import Optional, Sequence

from lainctr.layers import DINAttention, LMASettings, prepend_prompts
from lainctr.layers.lain import BranchCondition
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel


class DINBranch(InterestBranch):
    """DIN attention over [prompts; history]; pooled values are the raw tokens (B, d)."""

    def __init__(self, token_dim: int, hidden_units: Sequence[int], hidden_activations: str, dropout: float,
                 use_softmax: bool, *, lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        self.attention = DINAttention(token_dim, hidden_units, hidden_activations, dropout, use_softmax, lma=lma)

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        sequence, sequence_mask = prepend_prompts(inputs.history, inputs.mask, condition)
        interest, weights = self.attention(inputs.target, sequence, sequence_mask, condition)
        return BranchOutput(interest, weights[:, 0, -inputs.mask.shape[1]:], inputs.mask)


class DIN(SequenceCTRModel):
    """
    Args:
        attention_hidden_units / attention_hidden_activations / attention_dropout: DIN's scoring MLP.
        din_use_softmax: masked softmax over the scores (True) or LongCTR's raw sum pooling (False).
        use_short_branch: add the short-term MHTA branch.
        attention_dim / num_heads: the short-term attention.
        **kwargs: see :class:`SequenceCTRModel`.
    """

    def __init__(self, feature_map, model_id: str = "DIN", attention_hidden_units: Sequence[int] = (64,),
                 attention_hidden_activations: str = "ReLU", attention_dropout: float = 0.0,
                 din_use_softmax: bool = True, use_short_branch: bool = True, attention_dim: int = 64,
                 num_heads: int = 1, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.add_branch("long", DINBranch(self.token_dim, attention_hidden_units, attention_hidden_activations,
                                          attention_dropout, din_use_softmax, lma=self.lma_settings("long")))
        if use_short_branch:
            self.add_short_branch(attention_dim, num_heads, attention_dropout)
