"""SIM + LAIN: prompts prepended to the short window and added to the top-k set after retrieval (GSU scores
and the auxiliary pool see real behaviours only); LMA (query/key conditioning, length temperature) on the
ESU and on the short-term MHTA; ``lain_gsu_query`` optionally conditions the soft-search query."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

SIM_LAIN = lain_variant(get_model("SIM"), "SIM_LAIN")
