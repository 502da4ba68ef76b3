"""DIN + LAIN: prompts prepended to both branches; LMA (query/key conditioning of DIN's projections,
length temperature on the softmax) on DIN's attention and on the short-term MHTA."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

DIN_LAIN = lain_variant(get_model("DIN"), "DIN_LAIN")
