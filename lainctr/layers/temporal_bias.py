"""SparseCTR's composite relative temporal bias (spec section 3.3), with learnable per-head slopes.

    Delta_ij = |tau_i - tau_j| (int64 s)          rec_ij = floor(log2 max(Delta_ij, 1))
    per_ij   = sin(pi |hr_i - hr_j| / 24)         hr = hour of day (cyclic: 1 h and 23 h are alike)
    wkd_ij   = 1[weekend(i) != weekend(j)]        weekday Monday = 0: (floor(tau / 86400) + 3) mod 7
    b_h(i,j) = -(s^rec_h rec_ij + s^hr_h per_ij + s^wk_h wkd_ij)

Differences are taken in int64 seconds before any float cast (float32 resolves only 128 s at 1.7e9);
floor-log2 comes exactly from the binary exponent (``frexp``). Slopes start at the geometric series
(2^(-8/H))^(h-1), h = 1..H, for every term; a term that is off has no slopes.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence

import torch
from torch import nn

TIME_TERMS = ("recency", "hour", "weekend")
HOUR, DAY = 3600, 86_400


class TimeFeatures(NamedTuple):
    """Per-token time features: time (…) int64 seconds, hour (…) int64 in 0..23, weekend (…) bool."""
    time: torch.Tensor
    hour: torch.Tensor
    weekend: torch.Tensor

    def select(self, fn) -> "TimeFeatures":
        """The same features with ``fn`` (indexing, reshaping) applied to each."""
        return TimeFeatures(fn(self.time), fn(self.hour), fn(self.weekend))


def time_features(time: torch.Tensor, utc_offset_hours: float = 0.0) -> TimeFeatures:
    """time: (…) int64 Unix seconds -> :class:`TimeFeatures` in local time (UTC + ``utc_offset_hours``)."""
    local = time + int(round(utc_offset_hours * HOUR))
    hour = torch.div(local, HOUR, rounding_mode="floor") % 24
    weekday = (torch.div(local, DAY, rounding_mode="floor") + 3) % 7      # 1970-01-01 was a Thursday
    return TimeFeatures(time, hour, weekday >= 5)


def recency_bucket(delta: torch.Tensor) -> torch.Tensor:
    """floor(log2 max(delta, 1)) of int64 delta >= 0, exact (binary exponent of the float64 value)."""
    return (torch.frexp(delta.clamp(min=1).double()).exponent - 1).float()


def term_values(terms: Sequence[str], query: TimeFeatures, key: TimeFeatures) -> List[torch.Tensor]:
    """The ``terms`` (in :data:`TIME_TERMS` order) of every (query, key) pair: each (B, …) float, the features
    broadcasting to (B, …)."""
    values = []
    for term in terms:
        if term == "recency":
            values.append(recency_bucket((query.time - key.time).abs()))
        elif term == "hour":
            values.append(torch.sin(math.pi / 24 * (query.hour - key.hour).abs().float()))
        else:
            values.append((query.weekend != key.weekend).float())
    return values


def mix_terms(weights: torch.Tensor, terms: torch.Tensor) -> torch.Tensor:
    """Per-head sums of pair terms: weights (H, C) or per row (B, H, C), terms (B, C, …) -> (B, H, …).

    A batched (H, C) x (C, N) product writes the heads straight into the attention's (B, H, …) layout;
    ``torch.matmul`` of the broadcast weights would fold it into one (B N, C) x (C, H) product and then
    transpose the output in a copy as large as the bias.
    """
    flat = terms.flatten(2)
    mixed = torch.bmm(weights.expand(terms.shape[0], *weights.shape[-2:]), flat)
    return mixed.view(terms.shape[0], weights.shape[-2], *terms.shape[2:])


class RelTemporalBias(nn.Module):
    """b_h(i, j) = -sum_term s^term_h term_ij for query and key tokens whose features broadcast.

    Args:
        num_heads: H.
        terms: a subset of :data:`TIME_TERMS`.
    """

    def __init__(self, num_heads: int, terms: Sequence[str] = TIME_TERMS):
        super().__init__()
        unknown = set(terms) - set(TIME_TERMS)
        if unknown or not terms or len(set(terms)) != len(terms):
            raise ValueError(f"time_terms must be distinct, non-empty names among {TIME_TERMS}, got {list(terms)}")
        self.terms = tuple(t for t in TIME_TERMS if t in terms)
        self.num_heads = num_heads
        self.slopes = nn.Parameter(torch.empty(len(self.terms), num_heads))
        self.init_weights()

    def init_weights(self) -> None:
        ratio = 2.0 ** (-8.0 / self.num_heads)
        with torch.no_grad():
            self.slopes.copy_(ratio ** torch.arange(self.num_heads, dtype=torch.float).expand_as(self.slopes))

    def head_weights(self) -> torch.Tensor:
        """(H, len(terms)): -s^term_h, the weights :func:`mix_terms` gives the bias with."""
        return -self.slopes.t()

    def pair_terms(self, query: TimeFeatures, key: TimeFeatures) -> torch.Tensor:
        """(B, len(terms), …) float: this bias's terms of every (query, key) pair (see :func:`term_values`)."""
        return torch.stack(term_values(self.terms, query, key), dim=1)

    def forward(self, query: TimeFeatures, key: TimeFeatures) -> torch.Tensor:
        """Bias (B, H, …) of every pair; (B, …) is the broadcast shape of the query and key features."""
        return mix_terms(self.head_weights(), self.pair_terms(query, key))
