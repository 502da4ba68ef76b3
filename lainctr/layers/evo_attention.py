"""SparseCTR's EvoAttention (spec section 3.4): three sparse branches over a behaviour sequence and its
candidate, fused per position by a learned gate.

Tokens are the T behaviour columns followed by the candidate (column T, n = T + 1); Q, K, V = W_q x, W_k x,
W_v x (bias-free, shared by the branches), split into H heads. For a query at column i:

* global:     the P chunk summaries K̄_p = mean_{kappa_t = p} K_t (V̄_p likewise), visible once complete
              (n_p > 0 and end_p <= i);
* transition: the last min(m, n_p) behaviours of every chunk, visible when t <= i;
* local:      the query itself, the w previous real behaviours and the profile token u.

Each branch is a softmax over its visible keys of Q_i K_j / sqrt(d_h) + b_h(i, j) (the RelTemporal bias; 0
for keys without time: u and LAIN's prompts); a branch with no visible key outputs 0. The gate mixes the
three outputs, [a_g, a_t, a_l] = softmax(W_g [o_g; o_t; o_l] + b_g), and W_o projects the mix.

Nothing is T x T: the global and transition branches score n x P and n x P*m, the local branch is blocked
and banded (blocks of w queries attend to their own block and the one before: n x 2w scores, one 2x copy of
K and V). Keys per query P + P*m + 2w + 1 (+ k prompts). The local branch's blocks of all queries go through
``scaled_dot_product_attention`` (every row sees u; LAIN's per-row temperature divides q and the additive
mask). The global and transition branches, and the candidate-only last layer, write the logits out: a row
with no visible key must give 0 (SDPA gives NaN), and the candidate's weights are recorded.

LAIN (SparseCTR_LAIN): prompts are always-visible memory keys/values of all three branches; W_q/W_k take
e_len (``ConditionedLinear``); tau(L) divides every branch logit. The gate is not length-modulated.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention import ConditionedLinear, LengthModulation, masked_softmax
from .lain import BranchCondition, LMASettings
from .temporal_bias import RelTemporalBias, TimeFeatures
from .time_chunking import ChunkLayout


class SparseLayout(NamedTuple):
    """What every layer's attention needs about a batch, computed once (``n = T + 1`` tokens).

    Attributes:
        valid: (B, n) bool, real behaviours and the candidate (True at column T).
        chunks: the behaviours' :class:`~lainctr.layers.time_chunking.ChunkLayout`.
        times: :class:`TimeFeatures` of the n tokens, each (B, n) (the candidate's is the target time).
        summary_times: :class:`TimeFeatures` (B, P) of the chunk summaries: their most recent behaviour's.
        tail_times: :class:`TimeFeatures` (B, P * m) of the tail tokens.
    """
    valid: torch.Tensor
    chunks: ChunkLayout
    times: TimeFeatures
    summary_times: TimeFeatures
    tail_times: TimeFeatures


def sparse_layout(mask: torch.Tensor, chunks: ChunkLayout, times: TimeFeatures) -> SparseLayout:
    """mask (B, T) bool, the chunks of the behaviours, time features (B, T + 1) of behaviours + candidate."""
    valid = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    end = chunks.end.clamp(min=0)
    return SparseLayout(valid, chunks, times, times.select(lambda t: t.gather(1, end)),
                        times.select(lambda t: t.gather(1, chunks.tail_columns)))


class Memory(NamedTuple):
    """Always-visible key/value tokens without time: u (local branch only) and LAIN's prompts (all three).

    Attributes:
        profile: (B, 1, D) the profile token u; prompts: (B, k, D) or None.
    """
    profile: torch.Tensor
    prompts: Optional[torch.Tensor]

    def map(self, fn) -> "Memory":
        return Memory(fn(self.profile), None if self.prompts is None else fn(self.prompts))


class EvoOutput(NamedTuple):
    """out: (B, n_q, D); record: (B, T) the candidate's effective attention over the behaviours (chunk
    weights spread over their members, all three branches weighted by the gate, heads averaged; prompts and u
    excluded), or None when every position was a query."""
    out: torch.Tensor
    record: Optional[torch.Tensor]


class EvoAttention(LengthModulation):
    """One layer's three-branch sparse self-attention.

    Args:
        dim: D; num_heads: H (D % H == 0); window: w >= 1.
        time_terms: the RelTemporal terms (empty: no temporal bias).
        dropout: on the attention weights.
        lma: LAIN's length modulation (``NO_LMA`` for SparseCTR).
    """

    def __init__(self, dim: int, num_heads: int, window: int, time_terms: Sequence[str] = (), dropout: float = 0.0,
                 *, lma: LMASettings):
        super().__init__(lma)
        if dim % num_heads != 0:
            raise ValueError(f"model_dim={dim} is not divisible by num_heads={num_heads}")
        if window < 1:
            raise ValueError(f"local_window must be >= 1, got {window}")
        self.num_heads, self.head_dim, self.window = num_heads, dim // num_heads, window
        self.W_q = ConditionedLinear(dim, dim, lma.length_dim)
        self.W_k = ConditionedLinear(dim, dim, lma.length_dim)
        self.W_v = nn.Linear(dim, dim, bias=False)
        self.gate = nn.Linear(3 * dim, 3)
        self.W_o = nn.Linear(dim, dim, bias=False)
        self.temporal_bias = RelTemporalBias(num_heads, time_terms) if time_terms else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    # ----- helpers ----------------------------------------------------------------------------------
    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, m, D) -> (B, H, m, d_h)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def bias(self, query: TimeFeatures, key: TimeFeatures) -> Optional[torch.Tensor]:
        """(B, H, …) temporal bias of broadcastable query/key features, or None without time terms."""
        return None if self.temporal_bias is None else self.temporal_bias(query, key)

    def attend(self, q, k, v, visible, bias, memory_k, memory_v, condition) -> Tuple[torch.Tensor, torch.Tensor]:
        """softmax over [keys; memory] of q.k / sqrt(d_h) + bias, divided by tau(L).

        Args:
            q: (B, H, …, r, d_h); k, v: (B, H, …, K, d_h); visible: bool broadcastable to (B, H, …, r, K);
            bias: like the logits, or None; memory_k/v: (B, H, [1,] M, d_h) broadcastable against k, or None.
        Returns:
            output (B, H, …, r, d_h) and the weights over the K keys (memory excluded).
        """
        scale = 1.0 / math.sqrt(self.head_dim)
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale
        if bias is not None:
            logits = logits + bias
        visible = visible.expand(logits.shape)
        if memory_k is not None:
            memory_logits = torch.matmul(q, memory_k.transpose(-1, -2)) * scale
            logits = torch.cat([logits, memory_logits], dim=-1)
            visible = torch.cat([visible, visible.new_ones(memory_logits.shape)], dim=-1)
        weights = masked_softmax(self.scale_logits(logits, condition), visible)
        used = self.dropout(weights) if self.dropout is not None else weights
        width = k.shape[-2]
        out = torch.matmul(used[..., :width], v)
        if memory_k is not None:
            out = out + torch.matmul(used[..., width:], memory_v)
        return out, weights[..., :width]

    def fused_attend(self, q, k, v, visible, bias, memory_k, memory_v, condition) -> torch.Tensor:
        """:meth:`attend` for blocked queries through ``scaled_dot_product_attention``, without the weights.

        Only for the local branch, where every row sees u (SDPA gives NaN for a row without any visible key).
        tau(L) divides content and bias: q and the additive mask are divided by it.

        Args:
            q: (B, H, nb, r, d_h); k, v: (B, H, nb, K, d_h); visible: (B, 1, nb, r, K) bool; bias: (B, H, nb, r, K)
                or None; memory_k/v: (B, H, M, d_h).
        Returns:
            (B, H, nb, r, d_h).
        """
        batch, heads, blocks, rows = q.shape[:4]
        memory_shape = (batch, heads, blocks, memory_k.shape[2], self.head_dim)
        keys = torch.cat([k, memory_k.unsqueeze(2).expand(memory_shape)], dim=3).flatten(1, 2)
        values = torch.cat([v, memory_v.unsqueeze(2).expand(memory_shape)], dim=3).flatten(1, 2)
        additive = q.new_zeros(batch, heads, blocks, rows, k.shape[3]) if bias is None else bias
        if self.temperature is not None and condition is not None:
            tau = self.temperature.of(condition).view(-1, 1, 1, 1, 1)
            q, additive = q / tau, additive / tau
        additive = additive.masked_fill(~visible, float("-inf"))                     # after tau: no inf / tau
        additive = nn.functional.pad(additive, (0, memory_k.shape[2]))               # memory: always visible
        dropout = self.dropout.p if self.dropout is not None and self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q.flatten(1, 2), keys, values, additive.flatten(1, 2),
                                                         dropout_p=dropout, scale=1.0 / math.sqrt(self.head_dim))
        return out.unflatten(1, (heads, blocks))

    # ----- the three branches -----------------------------------------------------------------------
    def global_branch(self, q, k, v, columns, layout, memory_k, memory_v, condition):
        """Chunk summaries; q (B, H, n_q, d_h) at ``columns`` (n_q,); k, v (B, H, n, d_h)."""
        chunks = layout.chunks
        count = chunks.count.clamp(min=1).to(k.dtype)[:, None, :, None]
        summary_k = torch.einsum("btp,bhtd->bhpd", chunks.members, k[:, :, :-1]) / count
        summary_v = torch.einsum("btp,bhtd->bhpd", chunks.members, v[:, :, :-1]) / count
        visible = (chunks.count > 0).unsqueeze(1) & (chunks.end.unsqueeze(1) <= columns.view(1, -1, 1))
        bias = self.bias(layout.times.select(lambda t: t[:, columns, None]),
                         layout.summary_times.select(lambda t: t[:, None, :]))
        return self.attend(q, summary_k, summary_v, visible.unsqueeze(1), bias, memory_k, memory_v, condition)

    def transition_branch(self, q, k, v, columns, layout, memory_k, memory_v, condition):
        """The last min(m, n_p) behaviours of every chunk, token-causal."""
        chunks = layout.chunks
        tail_k = torch.einsum("bjt,bhtd->bhjd", chunks.tail_members, k[:, :, :-1])
        tail_v = torch.einsum("bjt,bhtd->bhjd", chunks.tail_members, v[:, :, :-1])
        visible = chunks.tail_valid.unsqueeze(1) & (chunks.tail_columns.unsqueeze(1) <= columns.view(1, -1, 1))
        bias = self.bias(layout.times.select(lambda t: t[:, columns, None]),
                         layout.tail_times.select(lambda t: t[:, None, :]))
        return self.attend(q, tail_k, tail_v, visible.unsqueeze(1), bias, memory_k, memory_v, condition)

    def local_branch(self, q, k, v, candidate_only, layout, memory_k, memory_v, condition):
        """Self, the w previous columns (real ones only) and u: blocked banded attention.

        The n tokens are left-padded to (nb + 1) * w columns (a whole padding block first), so query block b
        >= 1 attends to blocks b - 1 and b: a query at offset r of its block sees key offsets r..r + w of the
        2w keys. With ``candidate_only`` only the last block's last row is a query.
        """
        w, n = self.window, k.shape[2]
        blocks = (n + w - 1) // w                   # ceil(n / w); not -(-n // w): the ONNX export divides by truncation
        pad = (blocks + 1) * w - n
        padded = lambda x: nn.functional.pad(x, (0, 0, pad, 0))                    # noqa: E731  (B, H, n', d_h)
        k_blocks = padded(k).unflatten(2, (blocks + 1, w))
        v_blocks = padded(v).unflatten(2, (blocks + 1, w))
        valid_blocks = nn.functional.pad(layout.valid.long(), (pad, 0)).bool().unflatten(1, (blocks + 1, w))
        times = layout.times.select(lambda t: nn.functional.pad(t, (pad, 0)).unflatten(1, (blocks + 1, w)))
        first = blocks if candidate_only else 1
        pair = lambda x, dim: torch.cat([x.narrow(dim, first - 1, blocks + 1 - first),     # noqa: E731
                                         x.narrow(dim, first, blocks + 1 - first)], dim=dim + 1)
        keys, values = pair(k_blocks, 2), pair(v_blocks, 2)                                 # B x H x nb' x 2w x d_h
        key_valid = pair(valid_blocks, 1)                                                   # B x nb' x 2w
        key_times = TimeFeatures(*(pair(t, 1) for t in times))
        offsets = torch.arange(w - 1, w, device=q.device) if candidate_only else torch.arange(w, device=q.device)
        if candidate_only:
            query_blocks, query_times = q.unsqueeze(2), times.select(lambda t: t[:, -1:, -1:])
        else:
            query_blocks = padded(q).unflatten(2, (blocks + 1, w))[:, :, 1:]
            query_times = times.select(lambda t: t[:, 1:])
        relative = torch.arange(2 * w, device=q.device) - offsets.view(-1, 1)               # r' x 2w
        band = (relative >= 0) & (relative <= w)
        visible = (band & key_valid.unsqueeze(2)).unsqueeze(1)                               # B x 1 x nb' x r' x 2w
        bias = self.bias(query_times.select(lambda t: t.unsqueeze(-1)), key_times.select(lambda t: t.unsqueeze(-2)))
        if candidate_only:
            out, weights = self.attend(query_blocks, keys, values, visible, bias, memory_k.unsqueeze(2),
                                       memory_v.unsqueeze(2), condition)
            return out.flatten(2, 3), weights
        out = self.fused_attend(query_blocks, keys, values, visible, bias, memory_k, memory_v, condition)
        return out.flatten(2, 3)[:, :, pad - w:], None

    # ----- forward ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, memory: Memory, layout: SparseLayout,
                condition: Optional[BranchCondition] = None, candidate_only: bool = False) -> EvoOutput:
        """
        Args:
            x: (B, n, D) normalised tokens (behaviours, then the candidate); memory: normalised u / prompts.
            layout: the batch's :class:`SparseLayout`; condition: LAIN's (None: plain SparseCTR).
            candidate_only: compute the candidate's row only (the last layer: nothing else is read).
        Returns:
            :class:`EvoOutput` with out (B, n, D), or (B, 1, D) and the candidate's record.
        """
        e = condition.length_embedding if condition is not None else None
        n = x.shape[1]
        columns = torch.arange(n - 1 if candidate_only else 0, n, device=x.device)
        q = self.heads(self.W_q(x[:, columns], e))
        k, v = self.heads(self.W_k(x, e)), self.heads(self.W_v(x))
        tokens = torch.cat([memory.profile] + ([memory.prompts] if memory.prompts is not None else []), dim=1)
        local_k, local_v = self.heads(self.W_k(tokens, e)), self.heads(self.W_v(tokens))   # u, then the prompts
        prompt_k = prompt_v = None
        if memory.prompts is not None:
            prompt_k, prompt_v = local_k[:, :, 1:], local_v[:, :, 1:]
        o_g, w_g = self.global_branch(q, k, v, columns, layout, prompt_k, prompt_v, condition)
        o_t, w_t = self.transition_branch(q, k, v, columns, layout, prompt_k, prompt_v, condition)
        o_l, w_l = self.local_branch(q, k, v, candidate_only, layout, local_k, local_v, condition)
        merged = [o.transpose(1, 2).flatten(2) for o in (o_g, o_t, o_l)]                  # 3 x (B, n_q, D)
        alpha = torch.softmax(self.gate(torch.cat(merged, dim=-1)), dim=-1)                 # B x n_q x 3
        mixed = sum(alpha[..., b:b + 1] * merged[b] for b in range(3))
        record = self.record(alpha[:, -1], w_g, w_t, w_l, layout) if candidate_only else None
        return EvoOutput(self.W_o(mixed), record)

    def record(self, alpha, w_g, w_t, w_l, layout: SparseLayout) -> torch.Tensor:
        """The candidate's effective attention over the T behaviour columns, (B, T) (see :class:`EvoOutput`).

        Args:
            alpha: (B, 3) its gate; w_g (B, H, 1, P), w_t (B, H, 1, P*m), w_l (B, H, 1, 1, 2w) its weights.
        """
        chunks = layout.chunks
        width = chunks.index.shape[1]
        per_member = w_g.mean(1)[:, 0] / chunks.count.clamp(min=1)
        on_chunks = per_member.gather(1, chunks.index.clamp(min=0)) * (chunks.index >= 0)
        on_tails = torch.zeros_like(on_chunks).scatter_add_(1, chunks.tail_columns, w_t.mean(1)[:, 0] * chunks.tail_valid)
        window = w_l.mean(1)[:, 0, 0, :-1]                     # keys before the candidate itself: columns T - 2w + 1 ..
        keep = min(width, window.shape[1])
        on_window = torch.zeros_like(on_chunks)
        on_window[:, width - keep:] = window[:, window.shape[1] - keep:]
        return alpha[:, :1] * on_chunks + alpha[:, 1:2] * on_tails + alpha[:, 2:] * on_window
