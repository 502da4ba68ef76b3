"""The branch contract: what a behaviour branch receives, what it returns, and what it declares.

A model is a set of named :class:`InterestBranch` modules plus a head (``lainctr.models.base``). Each
branch reads the batch through :class:`BranchInputs` (typed tensors, not the raw batch), turns the history
into one interest vector and returns a :class:`BranchOutput`. It declares its ``output_dim`` (the head is
sized from it) and whether LAIN may prepend prompts to it and modulate its attentions (the model then
conditions it; nothing to opt into elsewhere).
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional

import torch
from torch import nn

from ..layers.attention import MultiHeadTargetAttention
from ..layers.lain import BranchCondition, LMASettings, prepend_prompts


class BranchInputs(NamedTuple):
    """What every branch of a model reads from one batch.

    Attributes:
        target: (B, d) the target item's token.
        history: (B, W, d) tokens of the W most recent behaviours, pre-padded (0 = padding on the left);
            W = T unless every branch asked for fewer (:meth:`InterestBranch.token_window`).
        mask: (B, T) bool, True = a real behaviour; column T - 1 is the most recent.
        history_length: (B,) int64, the untruncated number of prior behaviours (``seq_len``).
        item_rows: (B, T + 1) int64 item-table rows of the history (0 = padding) and, last, of the target.
        item_ids: {item feature: (B, T + 1)} the raw values of every item feature for the same positions
            (e.g. categories for SIM's hard search and TWIN's cross features).
        labels: (B, 1) float clicks in training (for supervised auxiliary losses), else None.
        user_index: (B,) the user of every sample (the feature map's ``group_id`` column): in-batch losses
            keep a user's other samples out of its negatives (DiffuMIN's CMIC).
        context: (B, C) the embedded user/context features (C may be 0), as the head reads them.
        history_time: (B, T) int64 times of the behaviours in the dataset's unit, 0 at padding; None when
            the dataset has no times (``dataset_info`` ``time_source: position``).
        target_time: (B,) int64 the sample's own time, or None when the split has none.
    """
    target: torch.Tensor
    history: torch.Tensor
    mask: torch.Tensor
    history_length: torch.Tensor
    item_rows: torch.Tensor
    item_ids: Dict[str, torch.Tensor]
    labels: Optional[torch.Tensor]
    user_index: torch.Tensor
    context: Optional[torch.Tensor] = None
    history_time: Optional[torch.Tensor] = None
    target_time: Optional[torch.Tensor] = None


class BranchOutput(NamedTuple):
    """What a branch returns.

    Attributes:
        interest: (B, output_dim) the interest vector the head reads.
        attention: (B, n) the branch's attention weights over its support, for analysis (Gini), or None.
        support: (B, n) bool, the positions ``attention`` is over: real behaviours only (prompts and padding
            excluded), in any layout the branch likes.
        auxiliary_loss: scalar, already weighted, added to the CTR loss in training; or None.
    """
    interest: torch.Tensor
    attention: Optional[torch.Tensor] = None
    support: Optional[torch.Tensor] = None
    auxiliary_loss: Optional[torch.Tensor] = None


class InterestBranch(nn.Module):
    """One behaviour branch of a model.

    Args:
        output_dim: width of the interest vector.
        accepts_prompts: LAIN may prepend its length-conditioned prompts to this branch's sequence (the
            branch then reads them from ``condition.prompts``).
        accepts_lma: the branch's attentions take LAIN's length modulation: built with the
            :class:`LMASettings` the model gives the branch (``model.lma_settings(name)``). The model checks
            at assembly that they were.
    """

    def __init__(self, output_dim: int, *, accepts_prompts: bool, accepts_lma: bool):
        super().__init__()
        self.output_dim = output_dim
        self.accepts_prompts, self.accepts_lma = accepts_prompts, accepts_lma

    @property
    def accepts_lain(self) -> bool:
        return self.accepts_prompts or self.accepts_lma

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        """The branch's interest; ``condition`` is LAIN's for this branch (None: run as the plain backbone)."""
        raise NotImplementedError

    def token_window(self) -> Optional[int]:
        """How many of the most recent behaviours' tokens this branch reads from ``inputs.history``
        (None = all of them). The model embeds only as many as its branches need."""
        return None

    def reads_time(self) -> bool:
        """Whether this branch reads ``inputs.history_time`` / ``target_time`` (the model's loaders gather
        the times only when some branch does). Default: no."""
        return False

    def prepare_inference(self, item_tokens: Callable[[], torch.Tensor]) -> None:
        """Hook before inference: cache what depends on the item table and the parameters only.
        ``item_tokens()`` embeds every row of the item table, (N, d) (row 0 = padding). Default: nothing."""


def recent_window(history: torch.Tensor, mask: torch.Tensor, window: int):
    """The last ``window`` behaviours and their own mask: (B, W, d), (B, T) -> (B, w, d), (B, w),
    w = min(T, window)."""
    width = min(window, mask.shape[1])
    return history[:, -width:], mask[:, -width:]


class ShortTermBranch(InterestBranch):
    """The zoo's short-term branch: multi-head target attention over the last ``short_seq_len - 1``
    behaviours with their own mask (LongCTR masks this window with its neighbour's mask; see the model
    READMEs), LAIN's prompts in front.

    Args:
        token_dim: d; short_seq_len: S (the window holds S - 1 behaviours).
        attention_dim / num_heads / dropout: the MHTA; lma: its length modulation.
    """

    def __init__(self, token_dim: int, short_seq_len: int, attention_dim: int, num_heads: int, dropout: float, *,
                 lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        if short_seq_len < 2:
            raise ValueError(f"short_seq_len must be >= 2 (the window holds short_seq_len - 1 items), got {short_seq_len}")
        self.window = short_seq_len - 1
        self.attention = MultiHeadTargetAttention(token_dim, attention_dim, num_heads, dropout, lma=lma)

    def token_window(self) -> int:
        return self.window

    def window_of(self, history: torch.Tensor, mask: torch.Tensor):
        """The last S - 1 behaviours and their own mask (:func:`recent_window`)."""
        return recent_window(history, mask, self.window)

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        window, window_mask = self.window_of(inputs.history, inputs.mask)
        sequence, sequence_mask = prepend_prompts(window, window_mask, condition)
        interest, weights = self.attention(inputs.target, sequence, sequence_mask, condition)
        return BranchOutput(interest, weights.mean(1)[:, -window.shape[1]:], window_mask)
