"""DIEN's recurrent pieces: left-aligning pre-padded sequences, a GRU runner, AUGRU, attention over GRU
states and the auxiliary next-behaviour loss.

The loader pre-pads histories (most recent behaviour on the right). A GRU must read a row's real tokens
from its first one, so :func:`left_align` moves them to the front (one stable sort and one gather, no loop
over samples) and :func:`run_gru` runs them from there (packed with their true lengths on CUDA). LongCTR
instead hands pre-padded rows to ``pack_padded_sequence``, so its GRU reads the padding and never the most
recent items (FUXICTR_NOTES s.6).

:class:`AUGRU` has no fused kernel: the input projections of all steps are one matmul and the loop over
time holds only the recurrent part (one small matmul and five element-wise ops per step). A step with
attention 0 leaves the state exactly unchanged, so trailing padding (attention 0 after the masked
softmax) needs no packing and a row's last real step gives its final state. Tried and slower on the CPU
(overhead-bound at these widths): a hand-written backward, a ``torch.jit.script`` loop, and shrinking the
batch to the still-active rows at every step.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .attention import DINAttention, LengthModulation, build_query_key_shift
from .lain import BranchCondition, LMASettings

STATE_ATTENTION_TYPES = ("din_attention", "bilinear_attention", "dot_attention")


def left_align(sequence: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's valid tokens to the front, in their order, and zero the rest (post-padding).

    Works for any mask pattern, e.g. ``[prompts; padding; items]`` becomes ``[prompts; items; 0 ...]``.

    Args:
        sequence: (B, n, d); mask: (B, n) bool, True = valid token.
    Returns:
        aligned (B, W, d), lengths (B,) int64, source (B, W) int64 with ``aligned[b, j] = sequence[b,
        source[b, j]]`` for ``j < lengths[b]``; W = max(1, max length) (trailing all-padding columns dropped), or
        W = n while ``torch.export`` traces (a width read from the data has no static shape; the extra columns
        are padding, which neither the GRU's earlier states nor the AUGRU, at attention 0, ever read).
    """
    lengths = mask.sum(dim=1)
    if torch.compiler.is_exporting():
        width = mask.shape[1]
    else:
        width = max(1, int(lengths.max())) if mask.shape[0] else 1
    # a stable sort of "is padding" lists valid positions first, each group in its original order
    source = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
    aligned = sequence.gather(1, source.unsqueeze(-1).expand(-1, -1, sequence.shape[-1]))
    return aligned.masked_fill(~valid.unsqueeze(-1), 0.0), lengths, source


def run_gru(gru: nn.GRU, aligned: torch.Tensor, lengths: torch.Tensor, pack: Optional[bool] = None) -> torch.Tensor:
    """Outputs of a batch-first ``nn.GRU`` over left-aligned rows, each read from its first token.

    A GRU is causal, so on left-aligned rows the states before a row's length are the same whether the
    batch is packed with the true lengths or run padded; only the work differs. Packing pays on CUDA
    (cuDNN skips the padding); on the CPU the packed GRU steps through autograd with a full-size
    gradient per step (quadratic in T: 5x slower at T = 200), so the padded run is used there.

    Args:
        aligned: (B, W, d) post-padded; lengths: (B,) int64 (0 allowed).
        pack: pack with the true lengths (default: on CUDA only).
    Returns:
        states (B, W, H), zero at positions ``>= lengths`` (rows of length 0 are all zero).
    """
    if aligned.is_cuda if pack is None else pack:
        # pack_padded_sequence rejects length 0; such a row reads one zero token, zeroed below
        packed = pack_padded_sequence(aligned, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(gru(packed)[0], batch_first=True, total_length=aligned.shape[1])
    else:
        states, _ = gru(aligned)
    valid = torch.arange(aligned.shape[1], device=aligned.device).unsqueeze(0) < lengths.unsqueeze(1)
    return states.masked_fill(~valid.unsqueeze(-1), 0.0)


class AUGRU(nn.Module):
    """GRU with attentional update gate (DIEN's interest evolution): u'_t = a_t * u_t,
    h_t = (1 - u'_t) * h_{t-1} + u'_t * tanh(W_n x_t + b_in + r_t * (U_n h_{t-1} + b_hn)).

    Parameters use ``nn.GRU``'s layout (gates reset, update, new). As in DIEN, u_t weights the candidate
    (``nn.GRU``'s z_t weights the old state), so with a_t = 1 it is ``nn.GRU`` with the update rows negated.

    Args:
        input_dim: width of the inputs x_t; hidden_dim: width H of the state.
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_dim, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_dim, hidden_dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_dim))
        self.init_weights()

    def init_weights(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_dim)  # nn.GRU's initialisation
        for weight in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, inputs: torch.Tensor, attention: torch.Tensor,
                initial_state: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            inputs: (B, W, input_dim); attention: (B, W), a_t (0 on padding: the step is then a no-op).
            initial_state: (B, H), zeros by default.
        Returns:
            the final state h_W (B, H).
        """
        hidden = self.hidden_dim
        state = (inputs.new_zeros(inputs.shape[0], hidden) if initial_state is None else initial_state)
        # unbind, not t-indexing: indexing one step makes autograd build a full-size gradient per step
        input_gates = F.linear(inputs, self.weight_ih, self.bias_ih).transpose(0, 1).unbind(0)
        weights = attention.transpose(0, 1).unsqueeze(-1).unbind(0)
        for gate_x, weight in zip(input_gates, weights):
            gate_h = F.linear(state, self.weight_hh, self.bias_hh)
            reset_update = torch.sigmoid(gate_x[:, :2 * hidden] + gate_h[:, :2 * hidden])
            new = torch.tanh(torch.addcmul(gate_x[:, 2 * hidden:], reset_update[:, :hidden], gate_h[:, 2 * hidden:]))
            state = torch.lerp(state, new, reset_update[:, hidden:] * weight)
        return state


class DotStateAttention(LengthModulation):
    """score_t = (h_t + W_ke e)^T (W q + W_qe e), W = identity (``dot``) or a learned kernel (``bilinear``).

    The length shifts W_qe, W_ke are LAIN's query/key conditioning (:class:`QueryKeyShift`); the key shift
    is constant over positions, so only the query side changes the softmax (kept for symmetry with the
    other attentions).

    Args:
        input_dim: d (state and target width); bilinear: learn the kernel W (initialised to the identity).
        use_softmax: masked softmax over the scores; otherwise masked raw scores.
        lma: LAIN's length modulation.
    """

    def __init__(self, input_dim: int, bilinear: bool = True, use_softmax: bool = True, *, lma: LMASettings):
        super().__init__(lma)
        if lma.temperature and not use_softmax:
            raise ValueError("the LAIN temperature needs use_attention_softmax: True (it rescales softmax logits)")
        self.use_softmax = use_softmax
        self.kernel = nn.Linear(input_dim, input_dim, bias=False) if bilinear else None
        self.length_shift = build_query_key_shift(lma, input_dim)
        self.init_weights()

    def init_weights(self) -> None:
        if self.kernel is not None:
            nn.init.eye_(self.kernel.weight)

    def forward(self, target: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor,
                condition: Optional[BranchCondition] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """target: (B, d); sequence: (B, n, d); mask: (B, n) bool -> pooled (B, d), weights (B, 1, n)."""
        query = self.kernel(target) if self.kernel is not None else target
        keys = sequence
        if self.length_shift is not None and condition is not None:
            query_shift, key_shift = self.length_shift(condition.length_embedding)
            query, keys = query + query_shift, keys + key_shift.unsqueeze(1)
        scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)
        weights = self.normalise(scores, mask, condition, self.use_softmax)
        return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1), weights.unsqueeze(1)


def build_state_attention(attention_type: str, input_dim: int, hidden_units: Sequence[int] = (64,),
                          hidden_activations: str = "ReLU", dropout: float = 0.0, use_softmax: bool = True, *,
                          lma: LMASettings) -> LengthModulation:
    """The attention over GRU states: ``din_attention`` (DIN's MLP scorer), ``bilinear_attention`` or
    ``dot_attention``; every one returns (pooled (B, d), weights (B, 1, n)) from (target, states, mask, condition)."""
    if attention_type == "din_attention":
        return DINAttention(input_dim, hidden_units, hidden_activations, dropout, use_softmax, lma=lma)
    if attention_type in ("bilinear_attention", "dot_attention"):
        return DotStateAttention(input_dim, attention_type == "bilinear_attention", use_softmax, lma=lma)
    raise ValueError(f"attention_type must be one of {STATE_ATTENTION_TYPES}, got '{attention_type}'")


class NextBehaviourLoss(nn.Module):
    """DIEN's auxiliary loss: the extractor state h_t must tell the next real behaviour e_{t+1} from a
    negative, an item drawn uniformly from the real behaviours of the whole batch.

    loss = mean over pairs (t, t+1) of real positions of ``-log s(h_t, e_{t+1}) - log(1 - s(h_t, e'))``,
    s = sigmoid(MLP([h; e])). Negatives use the global torch RNG (seeded runs are reproducible).

    Args:
        state_dim: H; token_dim: d; hidden_units: the scorer MLP (the DIEN code uses [100, 50]).
    """

    def __init__(self, state_dim: int, token_dim: int, hidden_units: Sequence[int] = (64,),
                 hidden_activations: str = "ReLU"):
        super().__init__()
        self.scorer = MLP_Block(input_dim=state_dim + token_dim, output_dim=1, hidden_units=list(hidden_units),
                                hidden_activations=hidden_activations)

    def forward(self, states: torch.Tensor, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """
        Args:
            states: (B, W, H) extractor outputs; tokens: (B, W, d) its inputs; real: (B, W) bool, True =
                a real behaviour (prompts and padding excluded).
        Returns:
            the scalar loss (0 when no row has two real behaviours).
        """
        pairs = real[:, :-1] & real[:, 1:]
        if not bool(pairs.any()):
            return states.sum() * 0.0
        state = states[:, :-1][pairs]                                     # P x H
        positive = tokens[:, 1:][pairs]                                   # P x d
        pool = tokens[real]
        # index_select, not pool[rows]: the rows repeat, and indexing's backward accumulates repeated rows
        # in a nondeterministic order on the CPU (same seed, different weights); index_select's is deterministic
        negative = torch.index_select(pool, 0, torch.randint(pool.shape[0], (state.shape[0],), device=pool.device))
        # first layer W [h; e] = W_h h + W_e e: the state's part once for its positive and its negative,
        # and no (2P, H + d) concatenation (the rest of the scorer acts row by row)
        first, rest = self.scorer.mlp[0], self.scorer.mlp[1:]
        w_state, w_item = first.weight.split([state.shape[-1], positive.shape[-1]], dim=1)
        per_state = F.linear(state, w_state, first.bias)                  # P x h
        positive_logits = rest(torch.addmm(per_state, positive, w_item.t()))
        negative_logits = rest(torch.addmm(per_state, negative, w_item.t()))
        return -(F.logsigmoid(positive_logits).mean() + F.logsigmoid(-negative_logits).mean())
