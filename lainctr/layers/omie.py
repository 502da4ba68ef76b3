"""OMIE, DiffuMIN's orthogonal multi-interest extractor (Lai et al., RecSys'25, arXiv 2508.15311).

The target q is turned into c orthonormal directions (interest channels); every real behaviour is routed to
the channel it projects on most; per channel the top-p % of its routed behaviours by projection are pooled
into one interest. Spec: ``shared/docs/DIFFUMIN_SPEC.md`` section 3.1 (readings of the public code's
defects in section 10).

:class:`TargetAttentionExtractor` is the "w/o OMIE" ablation: c-head target attention in its place.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from .attention import LengthModulation, LengthShift
from .lain import BranchCondition, LMASettings

KEEP_MODES = ("ratio", "code")   # S_j: top-p % of the routed (spec) | routed and among the top-k of all (public code)
POOLINGS = ("mean", "code")      # r_j: mean over S_j (spec) | sum / padded length (public code)
QR_JITTER = 1e-6          # epsilon * J: keeps M full rank (q = 0 with b_c = 0 gives the identity channels)
RATIO_ROUNDING = 1e-9     # ceil(p * n) computed as ceil(p * n - this): 0.1 * 30 is 3.0000000000000004 in floats


class OMIEOutput(NamedTuple):
    """What OMIE extracts from one batch.

    Attributes:
        channels: (B, c, d) O, orthonormal rows o_j.
        interests: (B, c, d) r_j, the a-weighted mean over the channel's kept set S_j (0 for an empty set).
        routed_counts: (B, c) n_j, real behaviours routed to each channel.
        kept_counts: (B, c) |S_j| (LAIN's prompts included: they join every channel).
        selected: (B, T, c) bool, behaviour t is in S_j (never a padded position).
    """
    channels: torch.Tensor
    interests: torch.Tensor
    routed_counts: torch.Tensor
    kept_counts: torch.Tensor
    selected: torch.Tensor


def orthonormal_channels(matrix: torch.Tensor) -> torch.Tensor:
    """O from M: (B, d, c) -> (B, c, d) with O O^T = I_c.

    O = (Q diag(sgn R_ii))^T for the reduced QR of M + eps J. The sign fix makes R_ii > 0, so O is the
    continuous Gram-Schmidt map of M's columns (Householder signs would flip a channel, and re-route its
    behaviours, whenever a pivot crosses zero). Needs c <= d (``torch.linalg.qr`` differentiates the reduced
    factorisation there).
    """
    jitter = QR_JITTER * torch.eye(matrix.shape[1], matrix.shape[2], dtype=matrix.dtype, device=matrix.device)
    q, r = torch.linalg.qr(matrix + jitter, mode="reduced")
    signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(matrix.dtype)
    return (q * signs.unsqueeze(1)).transpose(1, 2)


def route(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rho_t = argmax_j a_{t,j} of every real behaviour (ties: the lowest j): (B, T, c), (B, T) -> (B, T, c)
    bool, one True per real behaviour, none on padding."""
    routed = nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).bool()
    return routed & mask.unsqueeze(-1)


def select_top(scores: torch.Tensor, candidates: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per channel j, the ``keep[:, j]`` candidates with the largest a_{t,j}, the more recent first on ties.

    Non-candidates (padding included) score -inf, so they sort after every candidate and, as at most the
    candidates' count is kept, are never selected. The sort runs over the reversed sequence with a stable
    order, which puts the more recent of two equal scores first; extra left padding only appends -inf
    entries, so the selection does not depend on the padded width.

    Args:
        scores: (B, T, c) a; candidates: (B, T, c) bool; keep: (B, c) long, at most the candidates' count.
    Returns:
        (B, T, c) bool.
    """
    ranked = scores.detach().masked_fill(~candidates, float("-inf")).flip(1)
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices                      # B x T x c
    rank = torch.arange(scores.shape[1], device=scores.device).view(1, -1, 1)
    kept = torch.zeros_like(candidates).scatter(1, order, rank < keep.unsqueeze(1))
    return kept.flip(1)


def select_top_ratio(scores: torch.Tensor, routed: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """S_j (``keep_mode: ratio``): the ceil(p * n_j) routed-to-j behaviours with the largest a_{t,j}
    (:func:`select_top`); every channel holding a real behaviour keeps at least one.

    Args:
        scores: (B, T, c) a; routed: (B, T, c) bool (:func:`route`); keep_ratio: p in (0, 1].
    Returns:
        (B, T, c) bool.
    """
    keep = torch.ceil(routed.sum(1).double() * keep_ratio - RATIO_ROUNDING).long()              # B x c
    return select_top(scores, routed, keep)


def select_top_count(scores: torch.Tensor, routed: torch.Tensor, mask: torch.Tensor, keep_count: int) -> torch.Tensor:
    """S_j (``keep_mode: code``, the public code's rule, spec D1): behaviour t is kept when it is routed to j
    and among the ``keep_count`` real behaviours with the largest a_{t,j} (all of them when fewer are real;
    the code ranks over the padded list too and fails when T < keep_count). A channel can end empty.

    Args:
        scores: (B, T, c) a; routed: (B, T, c) bool (:func:`route`); mask: (B, T) bool, True = real;
        keep_count: k >= 1.
    Returns:
        (B, T, c) bool.
    """
    real = mask.unsqueeze(-1).expand_as(routed)
    keep = torch.full(routed.shape[::2], keep_count, dtype=torch.long, device=routed.device)
    return select_top(scores, real, keep) & routed


class OrthogonalInterestExtractor(LengthModulation):
    """OMIE: M = reshape(W_c q + b_c, [d, c]) -> O (:func:`orthonormal_channels`); a = S O^T; routing; top-p %
    per channel; r_j = sum_{t in S_j} a_{t,j} s_t / max(|S_j|, 1).

    The public code's readings (spec section 10, for ablations): ``keep_mode: code`` keeps the routed
    behaviours among the top ``keep_count`` of all by a_{t,j} (:func:`select_top_count`, D1); ``pooling:
    code`` divides the sum by the padded length T (+ the prompts) instead of |S_j| (D2), so r_j then depends
    on the padded width.

    Routing and selection are hard; W_c learns through the weights a_{t,j} of the pool (and, in DiffuMIN,
    through O in the denoiser's cross-attention).

    LAIN (``lma.length_dim > 0``): the channels come from W_c q + b_c + W_ce e_len (length-conditioned
    channels) and every score gets a per-channel shift a_{t,j} += o_j . W_ke e_len (it moves routing, not the
    order within a channel); both shifts are zero at initialisation. There is no softmax here, so no
    temperature. Prompts P (B, k, d) join every channel's set with weight a_{p,j} = P_p . o_j (+ the same
    shift), bypassing routing and top-p, and count in |S_j|.

    Args:
        token_dim: d; num_channels: c (<= d); keep_ratio: p in (0, 1]; lma: the length modulation.
        keep_mode: ``ratio`` (top-p % of the routed) or ``code``; keep_count: k of ``keep_mode: code``.
        pooling: ``mean`` (over S_j) or ``code`` (sum / padded length).
    """

    def __init__(self, token_dim: int, num_channels: int, keep_ratio: float, *, lma: LMASettings,
                 keep_mode: str = "ratio", keep_count: int = 100, pooling: str = "mean"):
        super().__init__(lma, softmax=False)
        if not 1 <= num_channels <= token_dim:
            raise ValueError(f"num_channels must be in [1, d = {token_dim}] (reduced QR), got {num_channels}")
        if not 0 < keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        if keep_mode not in KEEP_MODES:
            raise ValueError(f"keep_mode must be one of {KEEP_MODES}, got '{keep_mode}'")
        if keep_count < 1:
            raise ValueError(f"keep_count must be >= 1, got {keep_count}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got '{pooling}'")
        self.token_dim, self.num_channels, self.keep_ratio = token_dim, num_channels, keep_ratio
        self.keep_mode, self.keep_count, self.pooling = keep_mode, keep_count, pooling
        self.channel_projection = nn.Linear(token_dim, num_channels * token_dim)                # W_c, b_c
        self.channel_shift = LengthShift(lma.length_dim, num_channels * token_dim) if lma.length_dim else None
        self.key_shift = LengthShift(lma.length_dim, token_dim) if lma.length_dim else None

    def output_dim(self) -> int:
        """c * d, the width of the flattened interests [r_1 .. r_c]."""
        return self.num_channels * self.token_dim

    def channels(self, target: torch.Tensor, length_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """O of each target: (B, d) -> (B, c, d)."""
        flat = self.channel_projection(target)
        if self.channel_shift is not None and length_embedding is not None:
            flat = flat + self.channel_shift(length_embedding)
        return orthonormal_channels(flat.view(-1, self.token_dim, self.num_channels))

    def scores(self, tokens: torch.Tensor, channels: torch.Tensor,
               length_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """a = tokens O^T (+ LAIN's per-channel shift): (B, n, d), (B, c, d) -> (B, n, c)."""
        scores = torch.bmm(tokens, channels.transpose(1, 2))
        shift = self.score_shift(channels, length_embedding)
        return scores if shift is None else scores + shift

    def score_shift(self, channels: torch.Tensor, length_embedding: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """LAIN's per-channel shift o_j . W_ke e_len: (B, c, d), (B, d_e) -> (B, 1, c), or None without LAIN."""
        if self.key_shift is None or length_embedding is None:
            return None
        return torch.bmm(channels, self.key_shift(length_embedding).unsqueeze(-1)).transpose(1, 2)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                condition: Optional[BranchCondition] = None) -> OMIEOutput:
        """
        Args:
            target: (B, d); history: (B, T, d) pre-padded; mask: (B, T) bool, True = real behaviour.
            condition: LAIN's (e_len for the shifts, prompts), or None.
        """
        embedding = condition.length_embedding if condition is not None else None
        channels = self.channels(target, embedding)
        scores = self.scores(history, channels, embedding)                                     # B x T x c
        routed = route(scores, mask)
        selected = (select_top_ratio(scores, routed, self.keep_ratio) if self.keep_mode == "ratio"
                    else select_top_count(scores, routed, mask, self.keep_count))
        weights = torch.where(selected, scores, torch.zeros_like(scores))
        pooled = torch.bmm(weights.transpose(1, 2), history)                                    # B x c x d
        kept = selected.sum(1)
        width = history.shape[1]
        prompts = condition.prompts if condition is not None else None
        if prompts is not None:
            pooled = pooled + torch.bmm(self.scores(prompts, channels, embedding).transpose(1, 2), prompts)
            kept, width = kept + prompts.shape[1], width + prompts.shape[1]
        divisor = kept.clamp(min=1).unsqueeze(-1).to(pooled.dtype) if self.pooling == "mean" else float(width)
        return OMIEOutput(channels, pooled / divisor, routed.sum(1), kept, selected)



class TargetAttentionExtractor(OrthogonalInterestExtractor):
    """The "w/o OMIE" ablation: plain c-head target attention instead of OMIE's orthogonal channels, hard
    routing and top-p.

    u_j = column j of reshape(W_c q + b_c, [d, c]) (the same projection as OMIE's M, no QR);
    r_j = sum_t softmax_t(u_j . s_t / sqrt(d)) s_t over the real behaviours (0 without one);
    o_j = u_j / ||u_j||, the channel vector the denoiser cross-attends to (unit like OMIE's, not orthogonal).
    Every real behaviour is in every channel's set, so n_j = |S_j| = L. ``keep_ratio`` is unused.

    LAIN, as in OMIE: W_ce e_len shifts the queries u, o_j . W_ke e_len shifts the logits of channel j, and
    prompts join every channel's keys (softmax over [P; S]) and count in |S_j|; no temperature.
    """

    def channels(self, target: torch.Tensor, length_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """u of each target: (B, d) -> (B, c, d) (unnormalised queries)."""
        flat = self.channel_projection(target)
        if self.channel_shift is not None and length_embedding is not None:
            flat = flat + self.channel_shift(length_embedding)
        return flat.view(-1, self.token_dim, self.num_channels).transpose(1, 2)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                condition: Optional[BranchCondition] = None) -> OMIEOutput:
        """Same arguments and output as :meth:`OrthogonalInterestExtractor.forward` (``selected`` = every real
        behaviour in every channel)."""
        embedding = condition.length_embedding if condition is not None else None
        queries = self.channels(target, embedding)                                               # B x c x d
        channels = nn.functional.normalize(queries, dim=-1)
        prompts = condition.prompts if condition is not None else None
        keys, key_mask = history, mask
        if prompts is not None:
            keys = torch.cat([prompts, history], dim=1)
            key_mask = torch.cat([mask.new_ones(prompts.shape[:2]), mask], dim=1)
        logits = torch.bmm(keys, queries.transpose(1, 2)) / self.token_dim ** 0.5
        shift = self.score_shift(channels, embedding)
        logits = logits if shift is None else logits + shift
        weights = torch.softmax(logits.masked_fill(~key_mask.unsqueeze(-1), float("-inf")), dim=1)  # B x n x c
        weights = torch.where(key_mask.unsqueeze(-1), weights, torch.zeros_like(weights))       # L = 0: no NaN
        interests = torch.bmm(weights.transpose(1, 2), keys)
        selected = mask.unsqueeze(-1).expand(-1, -1, self.num_channels)
        kept = key_mask.sum(1, keepdim=True).expand(-1, self.num_channels)
        return OMIEOutput(channels, interests, selected.sum(1), kept, selected)
