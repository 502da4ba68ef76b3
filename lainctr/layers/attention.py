"""Target attentions with LAIN's Length-Modulated Attention (LMA) built in as optional parts.

Every attention takes an optional :class:`~lainctr.layers.lain.BranchCondition`. Without one (or when
built without ``length_dim``/``temperature``) it computes exactly the plain backbone attention, so a
``_LAIN`` variant with every switch off is its backbone. LMA has two parts:

* query/key conditioning ``W_q [q; e_len]``: implemented as ``W_q q + W_qe e_len`` (the same linear map
  with its weight split), with ``W_qe`` zero-initialised so a fresh LAIN model starts at the backbone;
* a per-sample softmax temperature ``tau(L) = 1 + gamma * sigmoid(-beta (L - L0))`` dividing the logits.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from fuxictr.pytorch.layers import MLP_Block
from torch import nn
from torch.nn import functional as F

from .caching import LengthTabulated
from .lain import BranchCondition, LAINOnly, LMASettings


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over positions where ``mask`` is True; a row with no valid position gives all zeros.

    Args:
        scores: (..., n) logits; mask: bool, broadcastable to ``scores``.
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask


class LengthTemperature(LAINOnly, LengthTabulated, nn.Module):
    """tau(L) = 1 + gamma * sigmoid(-beta * (L - L0)), with gamma, beta > 0 via softplus.

    Short sequences get tau -> 1 + gamma (flatter attention), long ones tau -> 1 (unchanged).

    Args:
        pivot: L0, the length where tau = 1 + gamma / 2.
        gamma_init: initial gamma; beta starts at 4 / L0.
        learn_pivot: make L0 trainable.
    """

    def __init__(self, pivot: float = 100.0, gamma_init: float = 1.0, learn_pivot: bool = False):
        super().__init__()
        if pivot <= 0 or gamma_init <= 0:
            raise ValueError(f"temperature pivot and gamma must be > 0, got {pivot}, {gamma_init}")
        self.gamma_init, self.beta_init, self.pivot_init = gamma_init, 4.0 / pivot, pivot
        self.raw_gamma = nn.Parameter(torch.empty(()))
        self.raw_beta = nn.Parameter(torch.empty(()))
        self.pivot = nn.Parameter(torch.empty(()), requires_grad=learn_pivot)
        self.table: Optional[torch.Tensor] = None          # inference table of tau(L), see tabulate()
        self.init_weights()

    def init_weights(self) -> None:
        inverse_softplus = lambda y: math.log(math.expm1(y))  # noqa: E731
        with torch.no_grad():
            self.raw_gamma.fill_(inverse_softplus(self.gamma_init))
            self.raw_beta.fill_(inverse_softplus(self.beta_init))
            self.pivot.fill_(self.pivot_init)

    def forward(self, length: torch.Tensor) -> torch.Tensor:
        """length: (B,) float -> tau: (B,) in [1, 1 + gamma]."""
        gamma, beta = F.softplus(self.raw_gamma), F.softplus(self.raw_beta)
        return 1.0 + gamma * torch.sigmoid(-beta * (length - self.pivot))

    @torch.no_grad()
    def tabulate(self, lengths: torch.Tensor) -> None:
        """tau(L) for lengths (N,) = 0, 1, ..., N - 1, for inference (see ``BranchCondition.table_rows``)."""
        self.table = self(lengths)

    def drop_cache(self) -> None:
        self.table = None

    def of(self, condition: BranchCondition) -> torch.Tensor:
        """tau (B,) of a branch condition: read from the table when the condition carries table rows."""
        if condition.table_rows is not None and self.table is not None:
            return self.table[condition.table_rows]
        return self(condition.length)


class LengthShift(LAINOnly, nn.Linear):
    """W_e e_len, (B, d_e) -> (B, out_dim): the length part of a projection of [x; e_len]. Bias-free and
    zero-initialised, so that a fresh LAIN model starts as its backbone."""

    def __init__(self, length_dim: int, out_dim: int):
        super().__init__(length_dim, out_dim, bias=False)

    def reset_parameters(self) -> None:
        """Zeros, also when FuxiCTR's ``BaseModel.reset_parameters`` re-initialises every module."""
        nn.init.zeros_(self.weight)


class ConditionedLinear(nn.Module):
    """``W x + W_e e``: a bias-free projection whose input may be extended by the length embedding e.

    With ``length_dim = 0`` it is a plain ``nn.Linear(in_dim, out_dim, bias=False)``.
    """

    def __init__(self, in_dim: int, out_dim: int, length_dim: int = 0):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        self.length_linear = LengthShift(length_dim, out_dim) if length_dim > 0 else None

    def shift(self, length_embedding: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """W_e e: (B, out_dim), or None without conditioning."""
        if self.length_linear is None or length_embedding is None:
            return None
        return self.length_linear(length_embedding)

    def forward(self, x: torch.Tensor, length_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, ..., in_dim); length_embedding: (B, length_dim), broadcast over the middle axes."""
        out = self.linear(x)
        shift = self.shift(length_embedding)
        if shift is not None:
            out = out + shift.view(shift.shape[0], *([1] * (out.dim() - 2)), shift.shape[-1])
        return out


class LengthModulation(nn.Module):
    """Base of every attention that LMA can modulate (MHTA, DIN's, the state attentions, TWIN's top-k): holds
    its :class:`LMASettings` and the temperature part. ``lma`` is a required argument of every subclass, so
    no attention can be built without saying whether it is length-modulated.

    ``softmax=False`` declares a module without a softmax over behaviours (DiffuMIN's hard per-channel
    selection): LMA's temperature has nothing to rescale there, so none is built; query/key conditioning
    (``lma.length_dim``) still applies.
    """

    def __init__(self, lma: LMASettings, *, softmax: bool = True):
        super().__init__()
        self.lma = lma
        self.temperature = (LengthTemperature(lma.temperature_pivot, lma.temperature_gamma_init, lma.learn_pivot)
                            if lma.temperature and softmax else None)

    def scale_logits(self, logits: torch.Tensor, condition: Optional[BranchCondition]) -> torch.Tensor:
        """logits: (B, ..., n) divided by tau(L) of each row (unchanged without a condition)."""
        if self.temperature is None or condition is None:
            return logits
        tau = self.temperature.of(condition)
        return logits / tau.view(-1, *([1] * (logits.dim() - 1)))

    def inverse_temperature(self, condition: Optional[BranchCondition]) -> Optional[torch.Tensor]:
        """1 / tau(L) per row, (B,), or None where :meth:`scale_logits` changes nothing: for attentions that
        fold the temperature into their queries and biases instead of rescaling the (larger) logits."""
        if self.temperature is None or condition is None:
            return None
        return 1.0 / self.temperature.of(condition)

    def normalise(self, scores: torch.Tensor, mask: torch.Tensor, condition: Optional[BranchCondition],
                  use_softmax: bool = True) -> torch.Tensor:
        """Attention weights from scores (B, n): masked softmax of the temperature-scaled scores, or, without
        softmax (sum pooling, which the temperature cannot modulate), the masked raw scores."""
        if use_softmax:
            return masked_softmax(self.scale_logits(scores, condition), mask)
        return scores * mask


class QueryKeyShift(nn.Module):
    """LMA's query/key conditioning of a scorer that reads q and k directly (DIN's MLP, the state attentions):
    q' = q + W_qe e_len and k' = k + W_ke e_len, i.e. the projections of [q; e], [k; e] with the token block
    left at the identity. W_qe, W_ke are :class:`LengthShift` (zero at initialisation: a fresh model scores
    as its backbone).

    Args:
        length_dim: d_e (> 0); dim: width of q and k.
    """

    def __init__(self, length_dim: int, dim: int):
        super().__init__()
        self.query = LengthShift(length_dim, dim)
        self.key = LengthShift(length_dim, dim)

    def forward(self, length_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """e_len (B, d_e) -> (W_qe e, W_ke e), each (B, dim)."""
        return self.query(length_embedding), self.key(length_embedding)


def build_query_key_shift(lma: LMASettings, dim: int) -> Optional[QueryKeyShift]:
    return QueryKeyShift(lma.length_dim, dim) if lma.length_dim > 0 else None


class MultiHeadTargetAttention(LengthModulation):
    """Scaled dot-product target attention (query = target item, keys/values = behaviours).

    Args:
        input_dim: token width d; attention_dim: d_a (split over ``num_heads``).
        lma: LAIN's length modulation (:data:`~lainctr.layers.lain.NO_LMA` for the plain attention).
        use_output_projection: apply W_o (d_a -> d) to the pooled heads.
    """

    def __init__(self, input_dim: int, attention_dim: int = 64, num_heads: int = 1, dropout: float = 0.0, *,
                 lma: LMASettings, use_output_projection: bool = True):
        super().__init__(lma)
        if attention_dim % num_heads != 0:
            raise ValueError(f"attention_dim={attention_dim} is not divisible by num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, attention_dim // num_heads
        self.W_q = ConditionedLinear(input_dim, attention_dim, lma.length_dim)
        self.W_k = ConditionedLinear(input_dim, attention_dim, lma.length_dim)
        self.W_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.W_o = nn.Linear(attention_dim, input_dim, bias=False) if use_output_projection else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, d_a) -> (B, H, n, d_a / H)."""
        return x.view(x.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def logits(self, target: torch.Tensor, keys: torch.Tensor,
               condition: Optional[BranchCondition] = None) -> torch.Tensor:
        """Relevance of every behaviour to the target, before the temperature: (B, H, n).

        The key side's e_len term W_ke e is the same for every key of a row, so its score q'.W_ke e is
        added once per row instead of to every key.
        """
        e = condition.length_embedding if condition is not None else None
        query = self.split_heads(self.W_q(target.unsqueeze(1), e))           # B x H x 1 x h
        key = self.split_heads(self.W_k.linear(keys))                        # B x H x n x h
        logits = torch.matmul(query, key.transpose(-1, -2)).squeeze(2)       # B x H x n
        key_shift = self.W_k.shift(e)
        if key_shift is not None:
            logits = logits + (query * self.split_heads(key_shift.unsqueeze(1))).sum(-1)
        return logits / math.sqrt(self.head_dim)

    def pool(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """weights: (B, H, n), values: (B, n, d) -> (B, d) (or (B, d_a) without W_o)."""
        if self.dropout is not None:
            weights = self.dropout(weights)
        value = self.split_heads(self.W_v(values))                           # B x H x n x h
        out = torch.matmul(weights.unsqueeze(2), value).squeeze(2)           # B x H x h
        out = out.reshape(out.shape[0], -1)
        return self.W_o(out) if self.W_o is not None else out

    def forward(self, target: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor,
                condition: Optional[BranchCondition] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            target: (B, d); sequence: (B, n, d); mask: (B, n) bool, True = real token.
        Returns:
            pooled (B, d) and attention weights (B, H, n) (zeros on masked positions).
        """
        logits = self.scale_logits(self.logits(target, sequence, condition), condition)
        weights = masked_softmax(logits, mask.unsqueeze(1))
        return self.pool(weights, sequence), weights


class DINAttention(LengthModulation):
    """DIN's activation unit: an MLP scores [q, k, q - k, q * k] for every behaviour.

    With LAIN query/key conditioning, q' = q + W_qe e and k' = k + W_ke e feed the scorer: the concatenations
    [q; e], [k; e] projected with the token block left at the identity, because the scorer's first layer
    already is the learned projection of q and k. W_qe, W_ke are zero-initialised. Through q' * k' the length
    changes how every behaviour is scored, yet the step costs the backbone's: k' enters the first layer
    only through per-row terms. Pooled values stay the raw tokens.

    Args:
        input_dim: token width d.
        hidden_units / hidden_activations / dropout: the scoring MLP.
        use_softmax: normalise the scores with a masked softmax (required for the temperature); without
            it the weights are used as they are (sum pooling, the original DIN / LongCTR default).
    """

    def __init__(self, input_dim: int, hidden_units: Sequence[int] = (64,), hidden_activations: str = "ReLU",
                 dropout: float = 0.0, use_softmax: bool = True, *, lma: LMASettings):
        super().__init__(lma)
        if lma.temperature and not use_softmax:
            raise ValueError("the LAIN temperature needs din_use_softmax: True (it rescales softmax logits)")
        self.use_softmax = use_softmax
        self.length_shift = build_query_key_shift(lma, input_dim)
        self.scorer = MLP_Block(input_dim=4 * input_dim, output_dim=1, hidden_units=list(hidden_units),
                                hidden_activations=hidden_activations, dropout_rates=dropout)

    def score(self, query: torch.Tensor, keys: torch.Tensor, key_shift: Optional[torch.Tensor] = None) -> torch.Tensor:
        """MLP([q, k', q - k', q * k']) with k' = k + key_shift: query (B, d), keys (B, n, d),
        key_shift (B, d) or None -> scores (B, n).

        The first layer is applied without building the (B, n, 4d) concatenation:
        W [q, k', q - k', q * k'] = (W_1 + W_3) q + (W_2 - W_3) k' + W_4 (q * k'), where the q terms and
        the shift's terms are computed once per row.
        """
        first, rest = self.scorer.mlp[0], self.scorer.mlp[1:]
        w_q, w_k, w_diff, w_prod = first.weight.split(keys.shape[-1], dim=1)
        w_key = w_k - w_diff
        per_row = nn.functional.linear(query, w_q + w_diff, first.bias)                        # B x h
        if key_shift is not None:
            per_row = per_row + key_shift @ w_key.t() + (query * key_shift) @ w_prod.t()
        hidden = torch.addmm(per_row.repeat_interleave(keys.shape[1], dim=0),
                             keys.reshape(-1, keys.shape[-1]), w_key.t())
        # in place (no second (B*n, h) buffer); the casts are no-ops except under autocast, where hidden is bf16
        products = (query.unsqueeze(1) * keys).reshape(-1, keys.shape[-1])
        hidden = hidden.addmm_(products.to(hidden.dtype), w_prod.t().to(hidden.dtype))
        return rest(hidden).view(keys.shape[:2])                                                # 2-D for Dice's BN

    def forward(self, target: torch.Tensor, sequence: torch.Tensor, mask: torch.Tensor,
                condition: Optional[BranchCondition] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            target: (B, d); sequence: (B, n, d); mask: (B, n) bool.
        Returns:
            pooled (B, d) and weights (B, 1, n).
        """
        query, key_shift = target, None
        if self.length_shift is not None and condition is not None:
            query_shift, key_shift = self.length_shift(condition.length_embedding)
            query = target + query_shift
        weights = self.normalise(self.score(query, sequence, key_shift), mask, condition, self.use_softmax)
        return torch.bmm(weights.unsqueeze(1), sequence).squeeze(1), weights.unsqueeze(1)
