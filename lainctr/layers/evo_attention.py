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
and banded (blocks of b = min(w, 16) queries attend to their own block and the w' = ceil(w / b) * b columns
before it: n x (w' + b) scores, one (w' + b) / b-fold copy of K and V, never w-fold). Keys per query
P + P*m + w' + b (+ 1 + k memory tokens). Blocks of b = w would score n x 2w (2x the pairs at w = 64).

Speed (CPU, where everything past the projections is bound by memory traffic over the (B, H, n, K) logits):
the RelTemporal pair terms depend on times only, so :func:`sparse_layout` computes them once per batch for
all layers, with the visibility mask as one more channel (:class:`KeySet`); a layer's bias + mask is one
(H, C) x (C, n K) matmul per row, written head-major, and ``baddbmm`` adds it to the scores. No branch uses
``scaled_dot_product_attention``: with a mask that needs a gradient (the slopes) it falls back to its math
path, which wrote 3 more copies of the local scores. Rows without a visible key (global, transition) zero
their n x d_h outputs rather than their n x K weights. Train step of SparseCTR_synthetic (batch 256,
max_len 200, 1 thread, this machine under load): 4.0 s with the per-head pair terms and blocks of w,
1.6 s with the above (see the commit log for the measurement).

LAIN (SparseCTR_LAIN): prompts are always-visible memory keys/values of all three branches; W_q/W_k take
e_len (``ConditionedLinear``); tau(L) divides every branch logit. The gate is not length-modulated. The
division is folded into what makes the logits: q / (sqrt(d_h) tau) and the bias slopes / tau (the mask stays
as it is: a hidden key gets weight 0 either way), so no pass over the (B, H, n, K) logits is added (dividing
them was a quarter of SparseCTR_LAIN's train step).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .attention import ConditionedLinear, LengthModulation
from .lain import BranchCondition, LMASettings
from .temporal_bias import RelTemporalBias, TimeFeatures, mix_terms, term_values
from .time_chunking import ChunkLayout

HIDDEN = torch.finfo(torch.float32).min     # the additive mask of a hidden key (finite: 0 * HIDDEN = 0 in grads)


class KeySet(NamedTuple):
    """One branch's key side for every query, from the batch's times and masks alone (shared by all layers).

    Attributes:
        terms: (B, C, *Q, K) float: the RelTemporal terms of every (query, key) pair (C - 1 of them, see
            :func:`~lainctr.layers.temporal_bias.term_values`) and last the additive mask (0 where the key is
            visible, :data:`HIDDEN` where not), so that one (H, C) matmul gives every head's bias + mask.
        rows: (B, 1, *Q, 1) bool, whether the query sees any key, or None where every query sees one (a
            memory key: u in the local branch, LAIN's prompts): a row without one must output 0.
    """
    terms: torch.Tensor
    rows: Optional[torch.Tensor]

    def select(self, fn) -> "KeySet":
        """``fn`` (indexing the query dimensions) applied to both."""
        return KeySet(fn(self.terms), None if self.rows is None else fn(self.rows))

    def with_memory(self, count: int) -> "KeySet":
        """``count`` always-visible keys without time appended (terms 0, mask 0): every row sees a key."""
        return self if count == 0 else KeySet(nn.functional.pad(self.terms, (0, count)), None)


def key_set(terms: Sequence[str], query: TimeFeatures, key: TimeFeatures, visible: torch.Tensor,
            rows_may_be_empty: bool) -> KeySet:
    """The :class:`KeySet` of query/key time features broadcasting to ``visible`` (B, *Q, K) bool."""
    hidden = torch.zeros(visible.shape, device=visible.device).masked_fill(~visible, HIDDEN)
    return KeySet(torch.stack([*term_values(terms, query, key), hidden], dim=1),
                  visible.any(-1, keepdim=True).unsqueeze(1) if rows_may_be_empty else None)


LOCAL_BLOCK = 16   # local-branch query block: n x (w + 16) scores at w = 64, vs n x 2w with blocks of w


def local_block(window: int) -> int:
    """b, the local branch's query block: min(w, :data:`LOCAL_BLOCK`)."""
    return min(window, LOCAL_BLOCK)


def key_span(window: int) -> int:
    """w': the keys a query block sees before its own, w rounded up to whole blocks."""
    block = local_block(window)
    return (window + block - 1) // block * block


def padded_blocks(x: torch.Tensor, dim: int, window: int) -> torch.Tensor:
    """x (…, n, …) left-padded with zeros along ``dim`` to w' + nb * b columns (nb = ceil(n / b)) and cut
    into blocks of b: (…, w' / b + nb, b, …); the last nb blocks are the query blocks."""
    block, n = local_block(window), x.shape[dim]
    blocks = (n + block - 1) // block      # ceil(n / b); not -(-n // b): the ONNX export divides by truncation
    pad = [0, 0] * (x.dim() - 1 - dim) + [key_span(window) + blocks * block - n, 0]
    return nn.functional.pad(x, pad).unflatten(dim, (-1, block))


def query_blocks(x: torch.Tensor, dim: int, window: int) -> torch.Tensor:
    """The query blocks of x (…, n, …) along ``dim``: (…, nb, b, …), the last block ending at column n - 1."""
    blocks = padded_blocks(x, dim, window)
    before = key_span(window) // local_block(window)
    return blocks.narrow(dim, before, blocks.shape[dim] - before)


def key_windows(x: torch.Tensor, dim: int, window: int, last_only: bool = False) -> torch.Tensor:
    """The keys of every query block (or of the last only): its b columns and the w' before them, as
    w' / b + 1 shifted views of the blocks concatenated (one (w' + b) / b-fold copy, never w-fold; its
    gradient is sums of slices): x (…, n, …) -> (…, nb, w' + b, …)."""
    blocks = padded_blocks(x, dim, window)
    before = key_span(window) // local_block(window)
    count = 1 if last_only else blocks.shape[dim] - before
    first = blocks.shape[dim] - before - count
    shifted = [blocks.narrow(dim, first + i, count) for i in range(before + 1)]
    return torch.cat(shifted, dim=dim + 1)


def local_keys(valid: torch.Tensor, times: TimeFeatures, window: int, terms: Sequence[str]) -> KeySet:
    """The local branch's :class:`KeySet` (B, C, nb, b, w' + b) for every query block: a query at offset r
    of its block sees key offsets w' - w + r .. w' + r (itself last), real ones only. valid, times (B, n)."""
    key_valid = key_windows(valid.long(), 1, window).bool()                           # B x nb x (w' + b)
    block, span = local_block(window), key_span(window)
    relative = (torch.arange(span + block, device=valid.device) - (span - window)
                - torch.arange(block, device=valid.device).view(-1, 1))               # b x (w' + b)
    visible = ((relative >= 0) & (relative <= window)) & key_valid.unsqueeze(2)       # B x nb x b x (w' + b)
    return key_set(terms, times.select(lambda t: query_blocks(t, 1, window).unsqueeze(-1)),
                   times.select(lambda t: key_windows(t, 1, window).unsqueeze(-2)), visible, False)


class SparseLayout(NamedTuple):
    """What every layer's attention needs about a batch, computed once (``n = T + 1`` tokens).

    Attributes:
        valid: (B, n) bool, real behaviours and the candidate (True at column T).
        chunks: the behaviours' :class:`~lainctr.layers.time_chunking.ChunkLayout`.
        times: :class:`TimeFeatures` of the n tokens, each (B, n) (the candidate's is the target time).
        summary_times: :class:`TimeFeatures` (B, P) of the chunk summaries: their most recent behaviour's.
        tail_times: :class:`TimeFeatures` (B, P * m) of the tail tokens.
        window: w; terms: the RelTemporal terms the key sets hold (the attention's must be the same).
        global_keys: :class:`KeySet` (B, C, n, P); transition_keys: (B, C, n, P * m);
            local_keys: (B, C, nb, b, w' + b), see :func:`local_keys`.
    """
    valid: torch.Tensor
    chunks: ChunkLayout
    times: TimeFeatures
    summary_times: TimeFeatures
    tail_times: TimeFeatures
    window: int
    terms: Tuple[str, ...]
    global_keys: KeySet
    transition_keys: KeySet
    local_keys: KeySet


def sparse_layout(mask: torch.Tensor, chunks: ChunkLayout, times: TimeFeatures, window: int,
                  terms: Sequence[str] = ()) -> SparseLayout:
    """mask (B, T) bool, the chunks of the behaviours, time features (B, T + 1) of behaviours + candidate;
    ``terms`` in :data:`~lainctr.layers.temporal_bias.TIME_TERMS` order (the attention's ``time_terms``).

    The pair terms (recency buckets, hours, weekends) depend on times only: computed here once per batch,
    each layer only mixes them with its slopes.
    """
    valid = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    end = chunks.end.clamp(min=0)
    summary_times = times.select(lambda t: t.gather(1, end))
    tail_times = times.select(lambda t: t.gather(1, chunks.tail_columns))
    columns = torch.arange(valid.shape[1], device=mask.device).view(1, -1, 1)
    queries = times.select(lambda t: t.unsqueeze(-1))
    summary_visible = (chunks.count > 0).unsqueeze(1) & (chunks.end.unsqueeze(1) <= columns)      # B x n x P
    tail_visible = chunks.tail_valid.unsqueeze(1) & (chunks.tail_columns.unsqueeze(1) <= columns)  # B x n x Pm
    terms = tuple(terms)
    return SparseLayout(valid, chunks, times, summary_times, tail_times, window, terms,
                        key_set(terms, queries, summary_times.select(lambda t: t.unsqueeze(1)), summary_visible, True),
                        key_set(terms, queries, tail_times.select(lambda t: t.unsqueeze(1)), tail_visible, True),
                        local_keys(valid, times, window, terms))


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

    def channel_weights(self, device: torch.device, inverse_tau: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each head's weights of a :class:`KeySet`'s channels, -slopes for the terms and 1 for the mask: (H, C),
        or (B, H, C) with the slopes divided by each row's tau (``inverse_tau`` (B,), see :meth:`attend`)."""
        mask = torch.ones(self.num_heads, 1, device=device)
        if self.temporal_bias is None:
            return mask
        slopes = self.temporal_bias.head_weights()
        if inverse_tau is None:
            return torch.cat([slopes, mask], dim=1)
        rows = inverse_tau.shape[0]
        return torch.cat([slopes * inverse_tau.view(-1, 1, 1), mask.expand(rows, -1, -1)], dim=2)

    def check(self, layout: SparseLayout) -> None:
        terms = () if self.temporal_bias is None else self.temporal_bias.terms
        if layout.window != self.window or layout.terms != terms:
            raise ValueError(f"the layout was built for window {layout.window} and terms {layout.terms}, the "
                             f"attention has window {self.window} and terms {terms}")

    def attend(self, q, keys, values, keys_of, condition) -> Tuple[torch.Tensor, torch.Tensor]:
        """softmax over the keys of (q.k / sqrt(d_h) + bias) / tau(L) + mask; a row without a visible key gives 0.

        Args:
            q: (B, H, *Q, r, d_h); keys, values: (B, H, *Q, K, d_h) (memory included); keys_of: the
                :class:`KeySet` (B, C, *Q, r, K) of these queries and keys.
        Returns:
            output (B, H, *Q, r, d_h) and the weights (B, H, *Q, r, K) (uniform in a row without a visible
            key, whose output is 0: zeroing the n_q x d_h outputs is cheaper than the n_q x K weights).
        """
        inverse_tau = self.inverse_temperature(condition)                            # B or None
        additive = mix_terms(self.channel_weights(q.device, inverse_tau), keys_of.terms)   # bias + mask, B x H x ...
        scale = 1.0 / math.sqrt(self.head_dim)
        if inverse_tau is not None:
            q = q * (scale * inverse_tau).view(-1, *([1] * (q.dim() - 1)))
            scale = 1.0
        logits = torch.baddbmm(additive.flatten(0, -3), q.flatten(0, -3), keys.flatten(0, -3).transpose(1, 2),
                               alpha=scale).view(additive.shape)
        weights = torch.softmax(logits, dim=-1)
        used = self.dropout(weights) if self.dropout is not None else weights
        out = torch.matmul(used, values)
        return (out, weights) if keys_of.rows is None else (out * keys_of.rows, weights)

    def over_keys(self, q, keys, values, keys_of: KeySet, candidate_only, memory_k, memory_v, condition):
        """:meth:`attend` of q (B, H, n_q, d_h) over keys/values (B, H, K, d_h) and the memory (B, H, M, d_h)
        or None; keys_of (B, C, n, K). Returns the output and, with ``candidate_only``, the weights over the K
        keys (memory excluded; else None)."""
        width = keys.shape[2]
        if candidate_only:
            keys_of = keys_of.select(lambda t: t[:, :, -1:])
        if memory_k is not None:
            keys, values = torch.cat([keys, memory_k], dim=2), torch.cat([values, memory_v], dim=2)
            keys_of = keys_of.with_memory(memory_k.shape[2])
        out, weights = self.attend(q, keys, values, keys_of, condition)
        if not candidate_only:
            return out, None
        return out, (weights if keys_of.rows is None else weights * keys_of.rows)[..., :width]

    # ----- the three branches -----------------------------------------------------------------------
    def global_branch(self, q, k, v, candidate_only, layout, memory_k, memory_v, condition):
        """Chunk summaries; q (B, H, n_q, d_h) (n_q = 1 with ``candidate_only``); k, v (B, H, n, d_h)."""
        chunks = layout.chunks
        count = chunks.count.clamp(min=1).to(k.dtype)[:, None, :, None]
        summary_k = torch.einsum("btp,bhtd->bhpd", chunks.members, k[:, :, :-1]) / count
        summary_v = torch.einsum("btp,bhtd->bhpd", chunks.members, v[:, :, :-1]) / count
        return self.over_keys(q, summary_k, summary_v, layout.global_keys, candidate_only, memory_k, memory_v,
                              condition)

    def transition_branch(self, q, k, v, candidate_only, layout, memory_k, memory_v, condition):
        """The last min(m, n_p) behaviours of every chunk, token-causal."""
        chunks = layout.chunks
        tail_k = torch.einsum("bjt,bhtd->bhjd", chunks.tail_members, k[:, :, :-1])
        tail_v = torch.einsum("bjt,bhtd->bhjd", chunks.tail_members, v[:, :, :-1])
        return self.over_keys(q, tail_k, tail_v, layout.transition_keys, candidate_only, memory_k, memory_v,
                              condition)

    def local_branch(self, q, k, v, candidate_only, layout, memory_k, memory_v, condition):
        """Self, the w previous columns (real ones only) and u (and the prompts): blocked banded attention.

        Queries come in blocks of b (:func:`local_block`); a block attends to its own columns, the w before
        them and the memory (:func:`local_keys`). With ``candidate_only`` only the last block's last row is a
        query (q (B, H, 1, d_h)). Returns (B, H, n_q, d_h) and, with ``candidate_only``, the weights
        (B, H, 1, 1, w' + b) over the w' + b keys (else None).
        """
        keys, values = (key_windows(x, 2, self.window, candidate_only) for x in (k, v))   # B x H x nb' x (w'+b) x d_h
        memory_shape = (*keys.shape[:3], memory_k.shape[2], self.head_dim)
        keys = torch.cat([keys, memory_k.unsqueeze(2).expand(memory_shape)], dim=3)
        values = torch.cat([values, memory_v.unsqueeze(2).expand(memory_shape)], dim=3)
        keys_of = layout.local_keys
        if candidate_only:
            queries, keys_of = q.unsqueeze(2), keys_of.select(lambda t: t[:, :, -1:, -1:])
        else:
            queries = query_blocks(q, 2, self.window)                                  # B x H x nb x b x d_h
        out, weights = self.attend(queries, keys, values, keys_of.with_memory(memory_k.shape[2]), condition)
        if candidate_only:
            return out.flatten(2, 3), weights[..., :-memory_k.shape[2]]
        return out.flatten(2, 3)[:, :, -k.shape[2]:], None

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
        self.check(layout)
        q = self.heads(self.W_q(x[:, -1:] if candidate_only else x, e))
        k, v = self.heads(self.W_k(x, e)), self.heads(self.W_v(x))
        tokens = torch.cat([memory.profile] + ([memory.prompts] if memory.prompts is not None else []), dim=1)
        local_k, local_v = self.heads(self.W_k(tokens, e)), self.heads(self.W_v(tokens))   # u, then the prompts
        prompt_k = prompt_v = None
        if memory.prompts is not None:
            prompt_k, prompt_v = local_k[:, :, 1:], local_v[:, :, 1:]
        o_g, w_g = self.global_branch(q, k, v, candidate_only, layout, prompt_k, prompt_v, condition)
        o_t, w_t = self.transition_branch(q, k, v, candidate_only, layout, prompt_k, prompt_v, condition)
        o_l, w_l = self.local_branch(q, k, v, candidate_only, layout, local_k, local_v, condition)
        merged = [o.transpose(1, 2).flatten(2) for o in (o_g, o_t, o_l)]                  # 3 x (B, n_q, D)
        alpha = torch.softmax(self.gate(torch.cat(merged, dim=-1)), dim=-1)                 # B x n_q x 3
        mixed = sum(alpha[..., b:b + 1] * merged[b] for b in range(3))
        record = self.record(alpha[:, -1], w_g, w_t, w_l, layout) if candidate_only else None
        return EvoOutput(self.W_o(mixed), record)

    def record(self, alpha, w_g, w_t, w_l, layout: SparseLayout) -> torch.Tensor:
        """The candidate's effective attention over the T behaviour columns, (B, T) (see :class:`EvoOutput`).

        Args:
            alpha: (B, 3) its gate; w_g (B, H, 1, P), w_t (B, H, 1, P*m), w_l (B, H, 1, 1, w' + b) its weights.
        """
        chunks = layout.chunks
        width = chunks.index.shape[1]
        per_member = w_g.mean(1)[:, 0] / chunks.count.clamp(min=1)
        on_chunks = per_member.gather(1, chunks.index.clamp(min=0)) * (chunks.index >= 0)
        on_tails = torch.zeros_like(on_chunks).scatter_add_(1, chunks.tail_columns, w_t.mean(1)[:, 0] * chunks.tail_valid)
        window = w_l.mean(1)[:, 0, 0, :-1]                     # keys before the candidate itself: columns T - w' - b + 1 ..
        keep = min(width, window.shape[1])
        on_window = torch.zeros_like(on_chunks)
        on_window[:, width - keep:] = window[:, window.shape[1] - keep:]
        return alpha[:, :1] * on_chunks + alpha[:, 1:2] * on_tails + alpha[:, 2:] * on_window
