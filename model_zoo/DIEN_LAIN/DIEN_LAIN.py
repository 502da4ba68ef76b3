"""DIEN + LAIN: prompts directly before the first real behaviour of the GRU input ([P; items; 0 ...],
length L + k) and of the short window; LMA (query/key conditioning, length temperature) on the attention
over the GRU states that drives the AUGRU, and on the short-term MHTA."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

DIEN_LAIN = lain_variant(get_model("DIEN"), "DIEN_LAIN")
