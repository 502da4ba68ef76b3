"""SimHash (random-hyperplane LSH) and SDIM's bucket pooling.

SDIM (Cao et al., CIKM'22) replaces retrieval + attention by hashing: behaviours whose SimHash signature
equals the target's are summed, per hash round; the rounds are averaged. The collision probability of
a tau-bit signature is (1 - angle(q, s) / pi) ** tau, so in expectation this is an attention whose weight
grows with the cosine similarity (sharper with more bits).

The hyperplanes are drawn once, from a seeded generator, and kept as a buffer: they are part of the
checkpoint and evaluation is repeatable (LongCTR's ``reuse_hash: False`` redraws them every forward).
"""
from __future__ import annotations

from typing import Optional, Tuple, cast

import torch
from torch import nn


class SimHash(nn.Module):
    """``num_hashes`` SimHash functions of ``hash_bits`` bits: h_j(x) = sum_t 2^t [R_{j,t} . x > 0].

    Args:
        input_dim: d, the width of the hashed vectors.
        num_hashes: m, the number of hash rounds.
        hash_bits: tau, bits per signature (2 ** tau buckets).
        seed: seed of the generator that draws R (standard normal, shape (d, m, tau)).
    """

    def __init__(self, input_dim: int, num_hashes: int, hash_bits: int, seed: int = 0):
        super().__init__()
        if num_hashes < 1 or hash_bits < 1:
            raise ValueError(f"num_hashes and hash_bits must be >= 1, got {num_hashes}, {hash_bits}")
        if hash_bits > 62:
            raise ValueError(f"hash_bits={hash_bits} does not fit a 64-bit bucket id")
        self.num_hashes, self.hash_bits = num_hashes, hash_bits
        generator = torch.Generator().manual_seed(seed)
        # a buffer, not a parameter: saved in the checkpoint, never trained, untouched by reset_parameters
        self.register_buffer("planes", torch.randn(input_dim, num_hashes, hash_bits, generator=generator))
        self.register_buffer("powers_of_two", 2 ** torch.arange(hash_bits, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d) -> bucket ids (..., m) int64 in [0, 2 ** tau).

        Bit t is 1 iff the projection is > 0 (LongCTR's argmax over [-Rx, Rx], ties going to 0).
        """
        planes, powers = cast(torch.Tensor, self.planes), cast(torch.Tensor, self.powers_of_two)
        projections = torch.matmul(x, planes.flatten(1)).view(*x.shape[:-1], self.num_hashes, self.hash_bits)
        return ((projections > 0).long() * powers).sum(-1)


class SimHashPooling(nn.Module):
    """u = mean_j norm( sum_{i: h_j(s_i) = h_j(q)} s_i + sum_p p ): SDIM's hash-bucket aggregation.

    ``always_match`` tokens (LAIN's prompts) collide with the target in every round. Vectorised over the
    rounds: the collision matrix (B, n, m) is contracted with the sequence in one batched matmul.

    Args:
        input_dim: d; num_hashes / hash_bits / seed: see :class:`SimHash`.
        l2_norm: L2-normalise every round's bucket sum before averaging (an empty bucket stays 0).
    """

    def __init__(self, input_dim: int, num_hashes: int, hash_bits: int, seed: int = 0, l2_norm: bool = True):
        super().__init__()
        self.hash = SimHash(input_dim, num_hashes, hash_bits, seed)
        self.l2_norm = l2_norm

    def collisions(self, target: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, n, m) bool: behaviour i is real and shares the target's bucket in round j."""
        return (self.hash(sequence) == self.hash(target).unsqueeze(1)) & mask.unsqueeze(-1)

    def forward(self, target: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor,
                always_match: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            target: (B, d); sequence: (B, n, d); mask: (B, n) bool, True = real behaviour.
            always_match: (B, k, d) tokens added to every round's bucket sum, or None.
        Returns:
            pooled (B, d) and the effective weight of every behaviour (B, n) (pooled = weights @ sequence
            + the always-match part); zero on padding.
        """
        collide = self.collisions(target, sequence, mask).to(sequence.dtype)          # B x n x m
        bucket_sums = torch.bmm(collide.transpose(1, 2), sequence)                    # B x m x d
        if always_match is not None:
            bucket_sums = bucket_sums + always_match.sum(1, keepdim=True)
        if self.l2_norm:  # as F.normalize: an empty bucket gives 0, not NaN
            norm = bucket_sums.norm(dim=-1, keepdim=True).clamp_min(1e-12)           # B x m x 1
            bucket_sums, scale = bucket_sums / norm, 1.0 / norm
        else:
            scale = torch.ones_like(bucket_sums[..., :1])
        pooled = bucket_sums.mean(1)
        weights = torch.bmm(collide, scale).squeeze(-1) / self.hash.num_hashes
        return pooled, weights

