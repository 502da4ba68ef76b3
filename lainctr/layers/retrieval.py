"""Top-k retrieval over a masked behaviour sequence (the GSU step of SIM / TWIN)."""
from __future__ import annotations

from typing import Tuple

import torch


def masked_topk(scores: torch.Tensor, mask: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k positions by score among real behaviours; padding is never chosen over a real behaviour.

    Padding gets score -inf before the selection (LongCTR's SIM multiplies by the mask instead, so zero-
    scored padding beats real behaviours with negative scores). The order among exactly equal real scores
    is whatever ``torch.topk`` returns (it may depend on the padded width): a caller whose scores tie by
    construction (SIM's hard search) adds its own tie-break, e.g. recency.

    Args:
        scores: (B, n) or (B, H, n) relevance; mask: (B, n) bool, True = real behaviour.
        k: number of positions; capped at n.
    Returns:
        index (..., k) int64 positions, selected scores (..., k) (-inf where padding had to fill in), and
        selected mask (..., k) bool (False where fewer than k real behaviours exist).
    """
    k = min(k, scores.shape[-1])
    valid = _broadcast_mask(scores, mask)
    filled = scores.masked_fill(~valid, float("-inf"))
    top_scores, index = torch.topk(filled, k, dim=-1, sorted=True)
    return index, top_scores, torch.gather(valid, -1, index)


def all_positions(scores: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The retrieval when k >= n: every position, in place, without selection or gathers.

    Args:
        scores: (B, n) or (B, H, n); mask: (B, n) bool.
    Returns:
        index (..., n) = 0..n-1 and the mask broadcast like ``scores`` (as :func:`masked_topk` would select
        them, up to order).
    """
    index = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
    return index, _broadcast_mask(scores, mask)


def _broadcast_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mask (B, n) to the shape of scores (B, n) or (B, H, n)."""
    return mask if scores.dim() == 2 else mask.unsqueeze(1).expand_as(scores)


def gather_positions(sequence: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """sequence (B, n, d), index (B, k) -> (B, k, d)."""
    return torch.gather(sequence, 1, index.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))
