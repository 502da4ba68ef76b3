"""SDIM (Cao et al., CIKM'22, arXiv 2205.10249) in the LongCTR two-branch layout.

Long branch: no retrieval and no softmax. m SimHash functions of tau bits hash the target and every
behaviour; per hash round the behaviours that share the target's bucket are summed (optionally
L2-normalised) and the rounds are averaged — an attention whose expected weight grows with the cosine
similarity. Short branch: multi-head target attention over the last short_seq_len - 1 behaviours.
"""
from typing import List, Optional

import torch

from lainctr.layers import LAINConfig
from lainctr.layers.hashing import SimHashPooling
from lainctr.models import SequenceCTRModel


class SDIM(SequenceCTRModel):
    """
    Args:
        num_hashes: m, hash rounds averaged.
        hash_bits: tau, bits per signature (more bits = fewer, more similar collisions).
        hash_seed: seed of the random hyperplanes, drawn once and saved with the model (a buffer).
        l2_norm: L2-normalise every round's bucket sum before averaging (LongCTR default False: the sum
            then grows with the length).
        use_short_branch: add the short-term MHTA branch.
        attention_dim / num_heads / attention_dropout: the short-term attention.
        **kwargs: see :class:`~lainctr.models.SequenceCTRModel`.
    """
    branches = ("long", "short")

    def __init__(self, feature_map, model_id: str = "SDIM", num_hashes: int = 16, hash_bits: int = 2,
                 hash_seed: int = 0, l2_norm: bool = True, use_short_branch: bool = True,
                 attention_dim: int = 64, num_heads: int = 1, attention_dropout: float = 0.0,
                 lain: Optional[LAINConfig] = None, **kwargs):
        super().__init__(feature_map, model_id=model_id, lain=lain, **kwargs)
        self.hash_pooling = SimHashPooling(self.token_dim, num_hashes, hash_bits, hash_seed, l2_norm)
        self.build_short_attention(use_short_branch, attention_dim, num_heads, attention_dropout)
        self.build_head(self.token_dim * (2 if use_short_branch else 1))

    def interests(self, target, history, mask, history_length, batch) -> List[torch.Tensor]:
        conditions = self.length_conditions(mask, history_length)
        long_condition = conditions["long"]
        # LAIN prompts always collide with the target: added to every round's bucket sum (no softmax here,
        # so no length-modulated attention in this branch)
        prompts = long_condition.prompts if long_condition is not None else None
        long_interest, weights = self.hash_pooling(target, history, mask, always_match=prompts)
        self.record_attention("long", weights, mask)
        return [long_interest] + self.short_interest(target, history, mask, conditions["short"])
