"""TWIN + LAIN: prompts prepended to the short window and appended after the top-k retrieval of the long
branch (scored by the same W_q/W_h scorer); LMA (e_len into W_q and W_h, tau(L) on the ESU softmax over
top-k and prompts, never on the ranking) on both attentions."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

TWIN_LAIN = lain_variant(get_model("TWIN"), "TWIN_LAIN")
