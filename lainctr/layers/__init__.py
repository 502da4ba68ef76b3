"""Layers shared by the models: target attentions and LAIN's length-conditioning modules."""
from .attention import DINAttention, LengthModulation, LengthTemperature, MultiHeadTargetAttention, masked_softmax
from .lain import NO_LMA, BranchCondition, LAINConfig, LengthConditioner, LMASettings, prepend_prompts

__all__ = ["DINAttention", "LengthModulation", "LengthTemperature", "MultiHeadTargetAttention", "masked_softmax",
           "NO_LMA", "BranchCondition", "LAINConfig", "LengthConditioner", "LMASettings", "prepend_prompts"]
