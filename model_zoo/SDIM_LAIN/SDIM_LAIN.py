"""SDIM + LAIN: prompts prepended to the short window and, in the hash branch, added to every round's
bucket sum as always-colliding items; LMA on the short-term MHTA only (the hash branch has no softmax)."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

SDIM_LAIN = lain_variant(get_model("SDIM"), "SDIM_LAIN")
