"""LAIN's length-conditioning modules, written once and reused by every ``<Backbone>_LAIN`` model.

* :class:`SpectralLengthEncoder` (SLE): L -> Fourier features with learnable frequencies -> MLP -> h_len.
* :class:`BucketLengthEncoder`: the "w/o SLE" ablation, an embedding of log2-spaced length buckets.
* :class:`LengthConditionedPrompts` (LCP): h_len -> k prompt tokens, prepended to behaviour branches.
* :class:`LengthConditioner`: runs the above once per batch and hands every branch a
  :class:`BranchCondition` (L, prompts, e_len) that its attentions use for LMA (see ``attention.py``).

Everything LAIN derives from L (h_len, prompts, e_len, the temperatures) depends on the integer L alone. In
inference the model therefore evaluates it once for every L up to max_len and reads a batch's rows from
these tables (``SequenceCTRModel``, via :class:`~lainctr.layers.caching.LengthTabulated`); training computes it
per batch, with gradients.

Spec: ``shared/docs/LAIN_SPEC.md`` (section 3; readings of the ambiguities in section 4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ..lain_presets import DEFAULT_PRESET, LAIN_PRESETS
from .caching import LengthTabulated

SHORT_BRANCH = "short"   # the branch ``lain_on_short_branch`` switches


class LAINOnly:
    """Marker mixin: every parameter of this module exists only because of LAIN (overhead accounting)."""


@dataclass(frozen=True)
class LAINConfig:
    """LAIN switches and sizes, as written in a model's YAML (every key optional).

    Defaults are the spec's ``lean`` preset (:data:`LAIN_PRESETS`); :func:`lain_config` starts from a named
    preset instead (the YAML key ``lain_preset``).
    """
    use_sle: bool = True                    # False: bucket-embedding length encoder ("w/o SLE")
    use_prompts: bool = True                # length-conditioned prompts (LCP)
    use_qk_conditioning: bool = True        # LMA part (i)
    use_temperature: bool = True            # LMA part (ii)
    lain_on_short_branch: bool = True       # False: LAIN only on the long branch
    num_prompts: int = 4                    # k
    fourier_dim: int = 16                   # d_f
    sle_hidden_dim: int = 64                # d_h
    prompt_hidden_dim: int = 32             # d_p; 0 = d (the token width)
    length_embedding_dim: int = 16          # d_e; 0 = use h_len itself (d_e = d)
    length_input: str = "raw"               # raw | log1p: scaling of L before the Fourier features
    length_source: str = "visible"          # visible: min(seq_len, max_len); raw: untruncated seq_len
    temperature_pivot: float = 100.0        # L0
    temperature_gamma_init: float = 1.0     # gamma at initialisation (beta starts at 4 / L0)
    learn_pivot: bool = False
    shared_prompts: bool = True             # one prompt set for all branches

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def __post_init__(self):
        if self.length_input not in ("raw", "log1p"):
            raise ValueError(f"length_input must be 'raw' or 'log1p', got '{self.length_input}'")
        if self.length_source not in ("visible", "raw"):
            raise ValueError(f"length_source must be 'visible' or 'raw', got '{self.length_source}'")
        if self.use_prompts and self.num_prompts < 1:
            raise ValueError("use_prompts: True needs num_prompts >= 1")

    @property
    def active(self) -> bool:
        """False when every component is off: the model is then exactly its backbone."""
        return self.use_prompts or self.use_qk_conditioning or self.use_temperature

    def conditions(self, branch: str) -> bool:
        """Whether LAIN conditions the branch named ``branch`` (every branch, except ``short`` when
        ``lain_on_short_branch`` is off)."""
        return self.active and (branch != SHORT_BRANCH or self.lain_on_short_branch)

    def lma_settings(self, branch: str, token_dim: int) -> "LMASettings":
        """The LMA settings of the attentions in ``branch`` (:data:`NO_LMA` where LAIN does not condition it)."""
        if not self.conditions(branch):
            return NO_LMA
        return LMASettings(length_dim=self.length_dim(token_dim) if self.use_qk_conditioning else 0,
                           temperature=self.use_temperature, temperature_pivot=self.temperature_pivot,
                           temperature_gamma_init=self.temperature_gamma_init, learn_pivot=self.learn_pivot)

    def length_dim(self, token_dim: int) -> int:
        return self.length_embedding_dim or token_dim

    def prompt_dim(self, token_dim: int) -> int:
        return self.prompt_hidden_dim or token_dim


def lain_config(lain_preset: str = DEFAULT_PRESET, **keys) -> LAINConfig:
    """The :class:`LAINConfig` of a YAML block: the sizes of ``lain_preset``, then the block's own keys.

    Raises:
        ValueError: an unknown preset (the message lists the known ones).
    """
    if lain_preset not in LAIN_PRESETS:
        raise ValueError(f"lain_preset must be one of {sorted(LAIN_PRESETS)}, got '{lain_preset}'")
    return LAINConfig(**{**LAIN_PRESETS[lain_preset], **keys})


@dataclass(frozen=True)
class LMASettings:
    """What Length-Modulated Attention adds to one attention; handed whole to every attention constructor.

    Attributes:
        length_dim: d_e, width of e_len for query/key conditioning (0 = no conditioning).
        temperature: divide the attention logits by tau(L).
        temperature_pivot / temperature_gamma_init / learn_pivot: tau's L0, initial gamma, trainable L0.
    """
    length_dim: int = 0
    temperature: bool = False
    temperature_pivot: float = 100.0
    temperature_gamma_init: float = 1.0
    learn_pivot: bool = False

    @property
    def active(self) -> bool:
        return self.length_dim > 0 or self.temperature


NO_LMA = LMASettings()  # the plain backbone attention


class BranchCondition(NamedTuple):
    """What one behaviour branch receives from LAIN for a batch.

    Attributes:
        length: (B,) float, L.
        prompts: (B, k, d) prompt tokens, or None.
        length_embedding: (B, d_e) e_len for query/key conditioning, or None.
        table_rows: (B,) long, the rows of the per-length inference tables (= L), or None when every
            length-dependent term is computed from ``length`` (training, or no tables built).
    """
    length: torch.Tensor
    prompts: Optional[torch.Tensor]
    length_embedding: Optional[torch.Tensor]
    table_rows: Optional[torch.Tensor] = None


class SpectralLengthEncoder(nn.Module):
    """h_len = MLP(LayerNorm(W_1 [sin(l w); cos(l w)] + b_1)), w learnable.

    Frequencies start at w_i = 2 pi / P_i with periods P_i geometric from 2 to 4 * max_len (from 0.05 to
    4 * log(1 + max_len) for ``log1p`` input), so coarse and fine length differences are both visible.

    Args:
        max_len: the model's max_len (sets the frequency range).
        out_dim: d, the token width; fourier_dim: d_f; hidden_dim: d_h.
    """

    def __init__(self, max_len: int, out_dim: int, fourier_dim: int = 16, hidden_dim: int = 64,
                 length_input: str = "raw"):
        super().__init__()
        self.length_input = length_input
        scale = math.log1p(max_len) if length_input == "log1p" else float(max_len)
        self.period_range = (0.05, 4 * scale) if length_input == "log1p" else (2.0, 4 * scale)
        self.frequencies = nn.Parameter(torch.empty(fourier_dim))
        self.input_layer = nn.Linear(2 * fourier_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, out_dim))
        self.init_weights()

    def init_weights(self) -> None:
        low, high = self.period_range
        periods = torch.logspace(math.log10(low), math.log10(high), len(self.frequencies))
        with torch.no_grad():
            self.frequencies.copy_(2 * math.pi / periods)

    def forward(self, length: torch.Tensor) -> torch.Tensor:
        """length: (B,) float -> h_len: (B, out_dim)."""
        x = torch.log1p(length) if self.length_input == "log1p" else length
        z = x.unsqueeze(-1) * self.frequencies
        return self.mlp(self.norm(self.input_layer(torch.cat([torch.sin(z), torch.cos(z)], dim=-1))))


class BucketLengthEncoder(nn.Module):
    """"w/o SLE": h_len = embedding of the log2 bucket of L (0, 1, 2-3, 4-7, ...), same width d."""

    def __init__(self, max_len: int, out_dim: int):
        super().__init__()
        self.num_buckets = int(math.ceil(math.log2(max_len + 1))) + 2
        self.embedding = nn.Embedding(self.num_buckets, out_dim)

    def forward(self, length: torch.Tensor) -> torch.Tensor:
        """length: (B,) float -> (B, out_dim)."""
        bucket = torch.floor(torch.log2(length.clamp(min=0) + 1)).long().clamp(max=self.num_buckets - 1)
        return self.embedding(bucket)


class LengthConditionedPrompts(nn.Module):
    """P(L) = reshape(MLP(h_len), [k, d]) with MLP d -> d_p -> k*d (GELU)."""

    def __init__(self, token_dim: int, num_prompts: int, hidden_dim: int):
        super().__init__()
        self.num_prompts, self.token_dim = num_prompts, token_dim
        self.mlp = nn.Sequential(nn.Linear(token_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, num_prompts * token_dim))

    def forward(self, length_state: torch.Tensor) -> torch.Tensor:
        """length_state: (B, d) -> prompts: (B, k, d)."""
        return self.mlp(length_state).view(-1, self.num_prompts, self.token_dim)


class LengthConditioner(LAINOnly, LengthTabulated, nn.Module):
    """Computes, once per batch, the :class:`BranchCondition` of every behaviour branch.

    Everything it computes depends on the integer L alone (row by row: no batch statistics), so for inference
    :meth:`tabulate` can evaluate it once for every L up to the batch width, and a batch then reads its rows
    with one gather (``forward(..., tabulated=True)``) instead of running the length encoder and the prompt
    MLP. The model drops the table after every parameter change (it is a :class:`LengthTabulated`).

    Args:
        config: the LAIN switches.
        token_dim: d, the width of behaviour tokens (and of prompts).
        max_len: the model's max_len.
        branches: names of the behaviour branches that accept LAIN (those ``config`` conditions are kept).
    """

    def __init__(self, config: LAINConfig, token_dim: int, max_len: int, branches: Sequence[str]):
        super().__init__()
        self.config = config
        self.branches = [b for b in branches if config.conditions(b)]
        needs_state = config.use_prompts or config.use_qk_conditioning
        self.length_encoder = None
        if needs_state:
            self.length_encoder = (SpectralLengthEncoder(max_len, token_dim, config.fourier_dim,
                                                         config.sle_hidden_dim, config.length_input)
                                   if config.use_sle else BucketLengthEncoder(max_len, token_dim))
        prompt_sets = (["shared"] if config.shared_prompts else self.branches) if config.use_prompts else []
        self.prompt_generators = nn.ModuleDict({
            name: LengthConditionedPrompts(token_dim, config.num_prompts, config.prompt_dim(token_dim))
            for name in prompt_sets})
        self.length_projection = (nn.Linear(token_dim, config.length_embedding_dim)
                                  if config.use_qk_conditioning and config.length_embedding_dim else None)
        self.table: Optional[torch.Tensor] = None          # inference table of length_terms, see tabulate()
        self.table_layout: List[Tuple[str, int, torch.Size]] = []

    @property
    def tabulable(self) -> bool:
        """Whether L is bounded by the batch width (``visible`` lengths), so a per-length table can serve it."""
        return self.config.length_source == "visible"

    def sequence_length(self, mask: torch.Tensor, history_length: torch.Tensor) -> torch.Tensor:
        """L per sample (B,) float: visible behaviours of the long branch, or the raw ``seq_len``."""
        if self.config.length_source == "raw":
            return history_length.to(mask.device).float()
        return mask.float().sum(-1)

    def length_terms(self, length: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The per-row outputs for lengths (N,): ``embedding`` (N, d_e) and ``prompts:<set>`` (N, k, d)."""
        state = self.length_encoder(length) if self.length_encoder is not None else None
        terms = {f"prompts:{name}": generator(state) for name, generator in self.prompt_generators.items()}
        if self.config.use_qk_conditioning:
            terms["embedding"] = self.length_projection(state) if self.length_projection is not None else state
        return terms

    @torch.no_grad()
    def tabulate(self, lengths: torch.Tensor) -> None:
        """Evaluate :meth:`length_terms` for lengths (N,) = 0, 1, ..., N - 1 into one (N, width) table."""
        terms = self.length_terms(lengths)
        self.table = torch.cat([t.reshape(len(lengths), -1) for t in terms.values()]
                               or [lengths.new_zeros(len(lengths), 0)], dim=1)
        self.table_layout, start = [], 0
        for name, value in terms.items():
            self.table_layout.append((name, start, value.shape[1:]))
            start += value[0].numel()

    def table_length(self) -> int:
        """The largest L the current table covers (-1 without a table)."""
        return self.table.shape[0] - 1 if self.table is not None else -1

    def drop_cache(self) -> None:
        self.table = None

    def lookup(self, rows: torch.Tensor) -> Dict[str, torch.Tensor]:
        """:meth:`length_terms` of the lengths ``rows`` (B,) long, read from the table."""
        if self.table is None:
            raise RuntimeError("no length table: call tabulate first")
        values = nn.functional.embedding(rows, self.table)
        return {name: values[:, start:start + shape.numel()].view(-1, *shape)
                for name, start, shape in self.table_layout}

    def forward(self, mask: torch.Tensor, history_length: torch.Tensor,
                tabulated: bool = False) -> Dict[str, BranchCondition]:
        """
        Args:
            mask: (B, T) long-branch mask (True/1 = real behaviour); history_length: (B,) raw seq_len.
            tabulated: read the terms from the table (built by :meth:`tabulate` up to at least T).
        Returns:
            ``{branch: BranchCondition}`` for every branch LAIN conditions.
        """
        length = self.sequence_length(mask, history_length)
        rows = length.long() if tabulated else None
        terms = self.lookup(rows) if rows is not None else self.length_terms(length)
        embedding = terms.get("embedding")
        conditions: Dict[str, BranchCondition] = {}
        for branch in self.branches:
            prompts = terms.get("prompts:shared", terms.get(f"prompts:{branch}"))
            conditions[branch] = BranchCondition(length, prompts, embedding, rows)
        return conditions


def prepend_prompts(sequence: torch.Tensor, mask: torch.Tensor,
                    condition: Optional[BranchCondition]) -> Tuple[torch.Tensor, torch.Tensor]:
    """[P; S] and [1_k; M]: prompt tokens in front of a behaviour sequence, always valid.

    Args:
        sequence: (B, n, d); mask: (B, n) bool.
    Returns:
        (B, k + n, d) and (B, k + n) bool; unchanged when there are no prompts.
    """
    if condition is None or condition.prompts is None:
        return sequence, mask
    prompts = condition.prompts
    prompt_mask = torch.ones(prompts.shape[:2], dtype=torch.bool, device=mask.device)
    return torch.cat([prompts, sequence], dim=1), torch.cat([prompt_mask, mask], dim=1)
