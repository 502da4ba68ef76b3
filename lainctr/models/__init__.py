"""Model base class and the generic LAIN variant builder."""
from .base import SequenceCTRModel
from .lain_variant import lain_variant

__all__ = ["SequenceCTRModel", "lain_variant"]
