"""DiffuMIN + LAIN: prompts prepended to the short encoder's [window; target] and added to every OMIE channel's
set (bypassing routing and top-p); query/key conditioning of OMIE's channels and scores (length-conditioned
channels, a per-channel score shift) and of the short encoder's self-attentions; the length temperature on
the short encoder's self-attentions (OMIE's selection is hard; the denoiser attends over interests)."""
from lainctr.models import lain_variant
from lainctr.registry import get_model

DiffuMIN_LAIN = lain_variant(get_model("DiffuMIN"), "DiffuMIN_LAIN")
