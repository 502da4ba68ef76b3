"""Post-LN Transformer parts shared by DiffuMIN's denoiser and its short-term encoder.

* :class:`MultiHeadAttention`: bias-free multi-head scaled dot-product attention over a key set, with
  LAIN's optional query/key conditioning and per-row temperature;
* :class:`FeedForward`: d -> f*d (ReLU) -> d;
* :class:`EncoderBlock`: ``Z = LN(Z + MHA(Z, Z, Z)); Z = LN(Z + FFN(Z))``, a length-modulated attention.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from .attention import ConditionedLinear, LengthModulation
from .lain import BranchCondition, LMASettings

LAYER_NORM_EPS = 1e-6


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_h)) V per head, heads concatenated, then W_o; W_q, W_k, W_v, W_o bias-free.

    Args:
        dim: d, the width of queries, keys, values and output.
        num_heads: H (d % H == 0, d_h = d / H).
        length_dim: d_e > 0 adds LAIN's W_qe e_len / W_ke e_len to the query / key projections
            (zero-initialised, see :class:`~lainctr.layers.attention.ConditionedLinear`).
    """

    def __init__(self, dim: int, num_heads: int, length_dim: int = 0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"the width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.W_q = ConditionedLinear(dim, dim, length_dim)
        self.W_k = ConditionedLinear(dim, dim, length_dim)
        self.W_v = nn.Linear(dim, dim, bias=False)
        self.W_o = nn.Linear(dim, dim, bias=False)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d) -> (B, H, n, d_h)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_mask: Optional[torch.Tensor] = None,
                length_embedding: Optional[torch.Tensor] = None,
                temperature: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            query: (B, n, d); key: (B, m, d) (also the values); key_mask: (B, m) bool, True = attend (every
                row needs one True), or None (all keys valid).
            length_embedding: (B, d_e) e_len for the conditioned projections, or None.
            temperature: (B,) tau(L) dividing every logit of the row, or None.
        Returns:
            (B, n, d).
        """
        q = self.split_heads(self.W_q(query, length_embedding))
        k = self.split_heads(self.W_k(key, length_embedding))
        v = self.split_heads(self.W_v(key))
        if temperature is not None:   # q / tau: every logit q.k / sqrt(d_h) of the row divided by tau
            q = q / temperature.view(-1, 1, 1, 1)
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        return self.W_o(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1))


class FeedForward(nn.Sequential):
    """d -> factor * d (ReLU) -> d, with biases."""

    def __init__(self, dim: int, factor: int):
        super().__init__(nn.Linear(dim, factor * dim), nn.ReLU(), nn.Linear(factor * dim, dim))


class EncoderBlock(LengthModulation):
    """One post-LN encoder block: ``Z = LN(Z + MHA(Z, Z, Z)); Z = LN(Z + FFN(Z))`` (key-padding mask).

    With LMA the self-attention's W_q / W_k take e_len and its logits are divided by tau(L) (one (beta, gamma)
    pair per block).

    Args:
        dim: d; num_heads: H; ffn_factor: the FFN's hidden width over d; lma: the length modulation.
    """

    def __init__(self, dim: int, num_heads: int, ffn_factor: int, *, lma: LMASettings):
        super().__init__(lma)
        self.attention = MultiHeadAttention(dim, num_heads, lma.length_dim)
        self.attention_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ffn = FeedForward(dim, ffn_factor)
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, condition: Optional[BranchCondition] = None,
                query: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            tokens: (B, n, d); mask: (B, n) bool, True = real token (at least one per row).
            condition: LAIN's (e_len, tau(L)), or None.
            query: (B, m, d) the rows to update, default ``tokens``. The last block of an encoder read at one
                slot passes that slot alone: every step after the attention is per row, so the other rows'
                outputs would never be read (the short encoder's last block: 1 row instead of w + 1).
        Returns:
            (B, m, d) (m = n without ``query``).
        """
        query = tokens if query is None else query
        embedding = condition.length_embedding if condition is not None else None
        tau = self.temperature.of(condition) if self.temperature is not None and condition is not None else None
        query = self.attention_norm(query + self.attention(query, tokens, mask, embedding, tau))
        return self.ffn_norm(query + self.ffn(query))
