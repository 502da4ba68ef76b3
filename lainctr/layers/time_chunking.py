"""Personalised time-aware chunking (SparseCTR, spec section 3.2): each user's history is cut into
P' = min(P, L) chunks at that user's P' - 1 largest time gaps, vectorised over the batch.

Only real behaviours form chunks: histories are pre-padded, so a row's L real behaviours are its last L
columns, and the gaps searched are the L - 1 gaps between them (the padding -> first behaviour "gap" is
none). A row's chunks therefore do not depend on the batch width T. Ties between equal gaps go to the
more recent column (a stable descending sort of the reversed row). Without usable times (``position``),
chunks are equal-size: kappa_t = floor(r_t * P' / L) with r_t the rank among the real behaviours.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


def gap_chunks(time: torch.Tensor, mask: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """Chunk index kappa of every behaviour, cutting at the P' - 1 largest gaps.

    Args:
        time: (B, T) int64 non-decreasing times of the real behaviours (anything at padding).
        mask: (B, T) bool, True = real behaviour, pre-padded.
        num_chunks: P >= 1.
    Returns:
        (B, T) int64 kappa in {0..P'-1} at real behaviours (non-decreasing), -1 at padding.
    """
    batch_size, width = mask.shape
    boundary = torch.zeros(batch_size, width, dtype=torch.bool, device=mask.device)
    if width > 1 and num_chunks > 1:
        real_gap = mask[:, 1:] & mask[:, :-1]                                  # gap g_t before column t >= 1
        gap = torch.where(real_gap, time[:, 1:] - time[:, :-1], torch.full_like(time[:, 1:], -1))
        order = torch.sort(gap.flip(-1), dim=-1, descending=True, stable=True).indices
        column = width - 1 - order                                             # ties: more recent column first
        cuts = (mask.sum(-1).clamp(max=num_chunks) - 1).clamp(min=0)           # P' - 1 boundaries per row
        chosen = torch.arange(width - 1, device=mask.device) < cuts.unsqueeze(-1)
        boundary.scatter_(1, column, chosen)
    return torch.where(mask, boundary.long().cumsum(-1), torch.full_like(boundary, -1, dtype=torch.long))


def equal_chunks(mask: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """Equal-size chunks over the real behaviours' ranks: mask (B, T) bool -> kappa (B, T) int64 (-1 at padding)."""
    length = mask.sum(-1, keepdim=True)
    rank = mask.long().cumsum(-1) - 1
    chunk = rank * length.clamp(max=num_chunks) // length.clamp(min=1)
    return torch.where(mask, chunk, torch.full_like(chunk, -1))


class ChunkLayout(NamedTuple):
    """Where the chunks of a batch lie (P = num_chunks slots per row; slots p >= P' are empty).

    Attributes:
        index: (B, T) int64 kappa, -1 at padding.
        members: (B, T, P) float one-hot of kappa (0 rows at padding): chunk sums are one matmul.
        count: (B, P) int64 n_p, behaviours per chunk.
        end: (B, P) int64 column of the chunk's most recent behaviour (meaningless where count = 0).
        tail_columns: (B, P * m) int64 columns of the last min(m, n_p) behaviours of every chunk, most recent
            first within a chunk (clamped to 0 where invalid).
        tail_valid: (B, P * m) bool.
        tail_members: (B, P * m, T) float one-hot of the tail columns (0 rows where invalid): tails are
            gathered by a matmul, whose gradient, unlike an indexed gather's, sums in a fixed order.
    """
    index: torch.Tensor  # type: ignore[assignment]  # shadows tuple.index
    members: torch.Tensor
    count: torch.Tensor  # type: ignore[assignment]  # shadows tuple.count
    end: torch.Tensor
    tail_columns: torch.Tensor
    tail_valid: torch.Tensor
    tail_members: torch.Tensor


def chunk_layout(index: torch.Tensor, num_chunks: int, tail_tokens: int) -> ChunkLayout:
    """Counts, ends and tail tokens of the chunks given by ``index`` (B, T) (from :func:`gap_chunks` or
    :func:`equal_chunks`); ``tail_tokens`` = m."""
    width = index.shape[1]
    members = index.unsqueeze(-1) == torch.arange(num_chunks, device=index.device)
    count = members.sum(1)
    first_real = width - count.sum(-1, keepdim=True)                       # real behaviours are the last L columns
    end = first_real + count.cumsum(-1) - 1
    back = torch.arange(tail_tokens, device=index.device)
    tail_columns = end.unsqueeze(-1) - back
    tail_valid = back < count.unsqueeze(-1)
    tail_columns = torch.where(tail_valid, tail_columns, torch.zeros_like(tail_columns)).flatten(1)
    tail_valid = tail_valid.flatten(1)
    tail_members = (tail_columns.unsqueeze(-1) == torch.arange(width, device=index.device)) & tail_valid.unsqueeze(-1)
    return ChunkLayout(index, members.float(), count, end, tail_columns, tail_valid, tail_members.float())
