"""DIEN (Zhou et al., AAAI'19, arXiv 1809.03672) in the LongCTR two-branch layout.

Long branch: a GRU interest extractor reads the history from its oldest real behaviour (rows are
left-aligned and packed with their true lengths), an attention scores every GRU state against the target,
and an AUGRU (update gate scaled by the attention weight) evolves the states; its final state is the
interest. An auxiliary loss trains the extractor states to predict the next behaviour. Short branch:
multi-head target attention over the last ``short_seq_len - 1`` behaviours.
"""
from typing import Optional, Sequence

import torch
from torch import nn

from lainctr.layers import LMASettings, prepend_prompts
from lainctr.layers.lain import BranchCondition
from lainctr.layers.recurrent import (
    AUGRU,
    STATE_ATTENTION_TYPES,
    NextBehaviourLoss,
    build_state_attention,
    left_align,
    run_gru,
)
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel


class InterestEvolutionBranch(InterestBranch):
    """GRU -> attention over the states -> AUGRU over [prompts; real behaviours], left-aligned (B, d).

    Args:
        token_dim: d (also the GRU width); attention_type / hidden_units / hidden_activations / dropout /
            use_softmax: the state attention (see :class:`DIEN`); lma: its LMA.
        auxiliary_loss: DIEN's next-behaviour loss module, or None; auxiliary_loss_weight: its weight.
    """

    def __init__(self, token_dim: int, attention_type: str, hidden_units: Sequence[int], hidden_activations: str,
                 dropout: float, use_softmax: bool, auxiliary_hidden_units: Optional[Sequence[int]],
                 auxiliary_loss_weight: float, *, lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        self.interest_extractor = nn.GRU(token_dim, token_dim, batch_first=True)
        self.state_attention = build_state_attention(attention_type, token_dim, hidden_units, hidden_activations,
                                                     dropout, use_softmax, lma=lma)
        self.use_attention_softmax = use_softmax
        self.interest_evolution = AUGRU(token_dim, token_dim)
        self.auxiliary_loss = (NextBehaviourLoss(token_dim, token_dim, auxiliary_hidden_units)
                               if auxiliary_hidden_units is not None else None)
        self.auxiliary_loss_weight = auxiliary_loss_weight

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        """Attention and support are in the left-aligned layout [prompts; items; 0 ...], prompts excluded."""
        sequence, sequence_mask = prepend_prompts(inputs.history, inputs.mask, condition)   # [P; 0 ...; items]
        num_prompts = sequence.shape[1] - inputs.history.shape[1]
        aligned, lengths, source = left_align(sequence, sequence_mask)      # [P; items; 0 ...], L + k
        valid = torch.arange(aligned.shape[1], device=aligned.device).unsqueeze(0) < lengths.unsqueeze(1)
        states = run_gru(self.interest_extractor, aligned, lengths)         # B x W x d
        _, weights = self.state_attention(inputs.target, states, valid, condition)
        weights = weights.squeeze(1)                                        # B x W, 0 on padding
        if not self.use_attention_softmax:   # raw scores would push u'_t = a_t u_t out of [0, 1]
            weights = torch.sigmoid(weights) * valid
        interest = self.interest_evolution(states, weights)
        real = valid & (source >= num_prompts)
        auxiliary_loss = None
        if self.auxiliary_loss is not None and self.training:
            auxiliary_loss = self.auxiliary_loss_weight * self.auxiliary_loss(states, aligned, real)
        return BranchOutput(interest, weights * real, real, auxiliary_loss)


class DIEN(SequenceCTRModel):
    """
    Args:
        attention_type: scorer of the GRU states, ``din_attention`` (MLP on [q, h, q - h, q * h]),
            ``bilinear_attention`` (h^T W q) or ``dot_attention`` (h^T q).
        attention_hidden_units / attention_hidden_activations: the ``din_attention`` MLP.
        attention_dropout: dropout in that MLP and on the short-term MHTA weights.
        use_attention_softmax: masked softmax over the state scores (required by LAIN's temperature);
            False gives each state its own weight sigmoid(score) (keeps the AUGRU gate in [0, 1]).
        use_auxiliary_loss / auxiliary_loss_weight / auxiliary_hidden_units: DIEN's next-behaviour loss,
            added to the CTR loss with this weight (training only).
        use_short_branch: add the short-term MHTA branch; attention_dim / num_heads: that MHTA.
        **kwargs: see :class:`SequenceCTRModel`. The GRU width is the token width d.
    """

    def __init__(self, feature_map, model_id: str = "DIEN", attention_type: str = "din_attention",
                 attention_hidden_units: Sequence[int] = (64,), attention_hidden_activations: str = "ReLU",
                 attention_dropout: float = 0.0, use_attention_softmax: bool = True,
                 use_auxiliary_loss: bool = True, auxiliary_loss_weight: float = 1.0,
                 auxiliary_hidden_units: Sequence[int] = (64,), use_short_branch: bool = True,
                 attention_dim: int = 64, num_heads: int = 1, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        if attention_type not in STATE_ATTENTION_TYPES:
            raise ValueError(f"attention_type must be one of {STATE_ATTENTION_TYPES}, got '{attention_type}'")
        if auxiliary_loss_weight < 0:
            raise ValueError(f"auxiliary_loss_weight must be >= 0, got {auxiliary_loss_weight}")
        self.add_branch("long", InterestEvolutionBranch(
            self.token_dim, attention_type, attention_hidden_units, attention_hidden_activations, attention_dropout,
            use_attention_softmax, auxiliary_hidden_units if use_auxiliary_loss else None, auxiliary_loss_weight,
            lma=self.lma_settings("long")))
        if use_short_branch:
            self.add_short_branch(attention_dim, num_heads, attention_dropout)
