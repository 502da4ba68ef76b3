"""Layers shared by the models: target attentions and LAIN's length-conditioning modules."""
from .attention import DINAttention, LengthTemperature, MultiHeadTargetAttention, masked_softmax
from .lain import BranchCondition, LAINConfig, LengthConditioner, prepend_prompts

__all__ = ["DINAttention", "LengthTemperature", "MultiHeadTargetAttention", "masked_softmax",
           "BranchCondition", "LAINConfig", "LengthConditioner", "prepend_prompts"]
