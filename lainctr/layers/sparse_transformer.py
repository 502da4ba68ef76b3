"""SparseCTR's stack (spec section 3.5): pre-norm blocks of EvoAttention and a SwiGLU feed-forward.

    X <- X + EvoAttn(RMSNorm(X));   X <- X + FFN(RMSNorm(X));   FFN(x) = W_3(SiLU(W_1 x) * W_2 x)

W_1, W_2: D -> ffn_factor * D and W_3 back, with biases; RMSNorm eps 1e-6 (SUAN's house style). The memory
tokens (u, LAIN's prompts) are keys/values only: each layer normalises them with its attention norm, they
are never updated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .evo_attention import EvoAttention, Memory, SparseLayout
from .lain import BranchCondition, LMASettings
from .temporal_bias import TIME_TERMS

RMS_EPS = 1e-6


@dataclass(frozen=True)
class SparseConfig:
    """Sizes of the sparse stack (YAML keys of the same names; defaults: the paper's preset)."""
    model_dim: int = 32              # D
    num_heads: int = 8               # H
    num_layers: int = 2              # N
    num_chunks: int = 16             # P
    tail_tokens: int = 2             # m
    local_window: int = 64           # w
    ffn_factor: int = 3
    time_terms: Sequence[str] = TIME_TERMS
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0

    def __post_init__(self):
        for name in ("num_layers", "num_chunks", "tail_tokens", "local_window", "ffn_factor", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.model_dim % self.num_heads != 0:
            raise ValueError(f"model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}")


class SwiGLU(nn.Module):
    """W_3(SiLU(W_1 x) * W_2 x): (…, D) -> (…, D)."""

    def __init__(self, dim: int, factor: int):
        super().__init__()
        self.W_1, self.W_2 = nn.Linear(dim, factor * dim), nn.Linear(dim, factor * dim)
        self.W_3 = nn.Linear(factor * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W_3(nn.functional.silu(self.W_1(x)) * self.W_2(x))


class SparseBlock(nn.Module):
    """One pre-norm layer: EvoAttention, then SwiGLU, each with a residual."""

    def __init__(self, config: SparseConfig, *, lma: LMASettings):
        super().__init__()
        dim = config.model_dim
        self.attention_norm, self.ffn_norm = nn.RMSNorm(dim, eps=RMS_EPS), nn.RMSNorm(dim, eps=RMS_EPS)
        self.attention = EvoAttention(dim, config.num_heads, config.local_window, config.time_terms,
                                      config.attention_dropout, lma=lma)
        self.ffn = SwiGLU(dim, config.ffn_factor)
        self.dropout = nn.Dropout(config.residual_dropout) if config.residual_dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, memory: Memory, layout: SparseLayout, condition: Optional[BranchCondition],
                candidate_only: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x: (B, n, D) -> (B, n, D), or the candidate's row (B, 1, D) with ``candidate_only``; and the
        candidate's attention record (see :class:`~lainctr.layers.evo_attention.EvoOutput`)."""
        attended = self.attention(self.attention_norm(x), memory.map(self.attention_norm), layout, condition,
                                  candidate_only)
        x = (x[:, -1:] if candidate_only else x) + self.dropout(attended.out)
        return x + self.dropout(self.ffn(self.ffn_norm(x))), attended.record


class SparseStack(nn.Module):
    """N :class:`SparseBlock` layers; the last one computes the candidate's row only (the only one read).

    Returns from ``forward``: the candidate's state (B, D) and its last-layer attention record (B, T).
    """

    def __init__(self, config: SparseConfig, *, lma: LMASettings):
        super().__init__()
        self.blocks = nn.ModuleList(SparseBlock(config, lma=lma) for _ in range(config.num_layers))

    def forward(self, x: torch.Tensor, memory: Memory, layout: SparseLayout,
                condition: Optional[BranchCondition]) -> Tuple[torch.Tensor, torch.Tensor]:
        records = []
        for depth, block in enumerate(self.blocks):
            x, record = block(x, memory, layout, condition, candidate_only=depth == len(self.blocks) - 1)
            records.append(record)
        return x[:, -1], records[-1]

    def states(self, x: torch.Tensor, memory: Memory, layout: SparseLayout,
               condition: Optional[BranchCondition] = None) -> list:
        """Every layer's output for every position, [(B, n, D)] * N (analysis and tests: no candidate-only
        shortcut)."""
        out = []
        for block in self.blocks:
            x, _ = block(x, memory, layout, condition, candidate_only=False)
            out.append(x)
        return out
