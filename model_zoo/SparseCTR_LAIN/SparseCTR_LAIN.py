"""SparseCTR + LAIN: the length-conditioned prompts (through the shared W_in) are always-visible memory
keys/values of all three EvoAttention branches in every layer (a prompt prepended to the sequence would sit
in the oldest chunk and outside most windows); e_len conditions W_q and W_k of every EvoAttention; tau(L)
divides every branch logit (content + temporal bias), one temperature per layer. The gate is untouched."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

SparseCTR_LAIN = lain_variant(get_model("SparseCTR"), "SparseCTR_LAIN")
