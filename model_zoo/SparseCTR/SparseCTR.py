"""SparseCTR (Lai et al., WWW'26, arXiv 2601.17836) for pointwise CTR, after ``shared/docs/SPARSECTR_SPEC.md``.

Long branch: behaviours and the candidate as one causal token sequence x_t = W_in s_t + g_beh,
x_c = W_in q + g_cand, cut into personalised time-aware chunks (largest time gaps), run through N pre-norm
blocks of three-branch sparse EvoAttention (chunk summaries, chunk tails, a local window with the profile
token u = W_u e_U) with a relative temporal bias, and read out at the candidate: h = RMSNorm(X^N_c). The head
is the zoo's MLP over [context, q, h]. The zoo's short-term MHTA branch is off by default (the local window
is SparseCTR's short path).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from lainctr.layers import LMASettings
from lainctr.layers.evo_attention import Memory, sparse_layout
from lainctr.layers.lain import BranchCondition
from lainctr.layers.sparse_transformer import RMS_EPS, SparseConfig, SparseStack
from lainctr.layers.temporal_bias import TIME_TERMS, time_features
from lainctr.layers.time_chunking import chunk_layout, equal_chunks, gap_chunks
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel

TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}
TIME_SOURCES = ("timestamp", "position")


class SparseSequenceBranch(InterestBranch):
    """The SparseCTR encoder as an interest branch: (B, T) behaviours + candidate -> h (B, D).

    Args:
        token_dim: d; context_dim: C (0: u is a learned vector).
        config: the stack's sizes (``model_dim`` D; d -> D by a bias-free W_in, the identity when d = D).
        time_source: ``timestamp`` (the batch's ``history_time``; chunks at the largest gaps) or ``position``
            (rank among the real behaviours; equal-size chunks; recency term only).
        time_unit: unit of the dataset's times, converted to whole seconds by integer division.
        utc_offset_hours: local time for the hour-of-day and weekend terms.
        use_type_embedding: add g_beh / g_cand; final_norm: RMSNorm on the read-out.
        lma: LAIN's settings for every EvoAttention.
    """

    def __init__(self, token_dim: int, context_dim: int, config: SparseConfig, time_source: str, time_unit: str,
                 utc_offset_hours: float, use_type_embedding: bool, final_norm: bool, *, lma: LMASettings):
        super().__init__(config.model_dim, accepts_prompts=True, accepts_lma=True)
        if time_source not in TIME_SOURCES:
            raise ValueError(f"time_source must be one of {TIME_SOURCES}, got '{time_source}'")
        if time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {sorted(TIME_UNITS)}, got '{time_unit}'")
        if time_source == "position" and set(config.time_terms) - {"recency"}:
            raise ValueError(f"time_source: position has no clock: time_terms may only hold 'recency', "
                             f"got {list(config.time_terms)}")
        dim = config.model_dim
        self.config, self.time_source = config, time_source
        self.time_divisor, self.utc_offset_hours = TIME_UNITS[time_unit], utc_offset_hours
        self.input_projection = nn.Linear(token_dim, dim, bias=False) if token_dim != dim else nn.Identity()
        self.type_embedding = nn.Parameter(torch.empty(2, dim)) if use_type_embedding else None
        self.profile_projection = nn.Linear(context_dim, dim, bias=False) if context_dim else None
        self.profile_token = None if context_dim else nn.Parameter(torch.empty(dim))
        self.stack = SparseStack(config, lma=lma)
        self.final_norm = nn.RMSNorm(dim, eps=RMS_EPS) if final_norm else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        with torch.no_grad():
            for p in (self.type_embedding, self.profile_token):
                if p is not None:
                    nn.init.normal_(p, std=0.02)

    def reads_time(self) -> bool:
        return self.time_source == "timestamp"

    def tokens(self, inputs: BranchInputs) -> torch.Tensor:
        """X^0: (B, T + 1, D), the behaviours then the candidate."""
        x = self.input_projection(torch.cat([inputs.history, inputs.target.unsqueeze(1)], dim=1))
        if self.type_embedding is not None:
            x = torch.cat([x[:, :-1] + self.type_embedding[0], x[:, -1:] + self.type_embedding[1]], dim=1)
        return x

    def memory(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> Memory:
        """u (B, 1, D) and LAIN's prompts through W_in (B, k, D) (None without)."""
        if self.profile_projection is not None:
            profile = self.profile_projection(inputs.context).unsqueeze(1)
        else:
            profile = self.profile_token.expand(inputs.mask.shape[0], 1, -1)
        prompts = condition.prompts if condition is not None else None
        return Memory(profile, None if prompts is None else self.input_projection(prompts))

    def token_times(self, inputs: BranchInputs) -> torch.Tensor:
        """(B, T + 1) int64 times in seconds (or ranks) of the behaviours (0 at padding) and the candidate:
        the sample's own time, else its last behaviour's (0 without behaviours)."""
        mask = inputs.mask
        if self.time_source == "position":
            history, target = (mask.long().cumsum(-1) - 1).clamp(min=0), None
        elif inputs.history_time is None:
            raise ValueError("time_source: timestamp, but the batch has no behaviour times (the dataset's "
                             "dataset_info.json says time_source: position); set time_source: position")
        else:
            history = torch.div(inputs.history_time, self.time_divisor, rounding_mode="floor") * mask
            target = inputs.target_time
            if target is not None:
                target = torch.div(target, self.time_divisor, rounding_mode="floor")
        if target is None:
            target = history[:, -1] * mask[:, -1]
        return torch.cat([history, target.view(-1, 1)], dim=1)

    def layout(self, inputs: BranchInputs):
        """The batch's :class:`~lainctr.layers.evo_attention.SparseLayout` (chunks, time features)."""
        mask, times = inputs.mask, self.token_times(inputs)
        chunking = (gap_chunks(times[:, :-1], mask, self.config.num_chunks) if self.time_source == "timestamp"
                    else equal_chunks(mask, self.config.num_chunks))
        chunks = chunk_layout(chunking, self.config.num_chunks, self.config.tail_tokens)
        return sparse_layout(mask, chunks, time_features(times, self.utc_offset_hours), self.config.local_window,
                             [t for t in TIME_TERMS if t in self.config.time_terms])

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        state, record = self.stack(self.tokens(inputs), self.memory(inputs, condition), self.layout(inputs), condition)
        return BranchOutput(self.final_norm(state), record, inputs.mask)


class SparseCTR(SequenceCTRModel):
    """
    Args:
        model_dim (0 = the token width d) / num_heads / num_layers / num_chunks / tail_tokens / local_window /
            ffn_factor / attention_dropout / residual_dropout: the sparse stack (:class:`SparseConfig`).
        time_terms: RelTemporal terms among ``recency``, ``hour``, ``weekend`` ([] = no temporal bias).
        time_source / time_unit / utc_offset_hours / use_type_embedding / final_norm: see
            :class:`SparseSequenceBranch`.
        use_short_branch: add the zoo's short-term MHTA branch (short_attention_dim / short_num_heads).
        **kwargs: see :class:`SequenceCTRModel`.
    """

    def __init__(self, feature_map, model_id: str = "SparseCTR", model_dim: int = 32, num_heads: int = 8,
                 num_layers: int = 2, num_chunks: int = 16, tail_tokens: int = 2, local_window: int = 64,
                 ffn_factor: int = 3, time_terms: Sequence[str] = TIME_TERMS, time_source: str = "timestamp",
                 time_unit: str = "s", utc_offset_hours: float = 0.0, attention_dropout: float = 0.0,
                 residual_dropout: float = 0.0, use_type_embedding: bool = True, final_norm: bool = True,
                 use_short_branch: bool = False, short_attention_dim: int = 64, short_num_heads: int = 2, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        config = SparseConfig(model_dim or self.token_dim, num_heads, num_layers, num_chunks, tail_tokens,
                              local_window, ffn_factor, tuple(time_terms), attention_dropout, residual_dropout)
        self.add_branch("long", SparseSequenceBranch(self.token_dim, self.context_dim, config, time_source, time_unit,
                                                     utc_offset_hours, use_type_embedding, final_norm,
                                                     lma=self.lma_settings("long")))
        if use_short_branch:
            self.add_short_branch(short_attention_dim, short_num_heads, attention_dropout)
