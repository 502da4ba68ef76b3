"""SDIM (Cao et al., CIKM'22, arXiv 2205.10249) in the LongCTR two-branch layout.

Long branch: no retrieval and no softmax. m SimHash functions of tau bits hash the target and every
behaviour; per hash round the behaviours that share the target's bucket are summed (optionally
L2-normalised) and the rounds are averaged — an attention whose expected weight grows with the cosine
similarity. Short branch: multi-head target attention over the last short_seq_len - 1 behaviours.
"""
from typing import Optional

from lainctr.layers.hashing import SimHashPooling
from lainctr.layers.lain import BranchCondition
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel


class SimHashBranch(InterestBranch):
    """SDIM's bucket pooling. It has no softmax, so no length-modulated attention; LAIN's prompts always
    collide with the target (added to every round's bucket sum)."""

    def __init__(self, token_dim: int, num_hashes: int, hash_bits: int, hash_seed: int, l2_norm: bool):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=False)
        self.hash_pooling = SimHashPooling(token_dim, num_hashes, hash_bits, hash_seed, l2_norm)

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        prompts = condition.prompts if condition is not None else None
        interest, weights = self.hash_pooling(inputs.target, inputs.history, inputs.mask, always_match=prompts)
        return BranchOutput(interest, weights, inputs.mask)


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

    def __init__(self, feature_map, model_id: str = "SDIM", num_hashes: int = 16, hash_bits: int = 2,
                 hash_seed: int = 0, l2_norm: bool = True, use_short_branch: bool = True,
                 attention_dim: int = 64, num_heads: int = 1, attention_dropout: float = 0.0, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.add_branch("long", SimHashBranch(self.token_dim, num_hashes, hash_bits, hash_seed, l2_norm))
        if use_short_branch:
            self.add_short_branch(attention_dim, num_heads, attention_dropout)
