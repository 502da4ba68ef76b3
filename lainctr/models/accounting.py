"""Parameter accounting: what LAIN adds to a model."""
from __future__ import annotations

from typing import List

from torch import nn

from ..layers.lain import LAINOnly


def lain_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Trainable parameters that exist only because of LAIN: those of every :class:`LAINOnly` module
    (length conditioner, temperatures, length shifts); empty for a backbone."""
    found = {id(p): p for m in model.modules() if isinstance(m, LAINOnly) for p in m.parameters() if p.requires_grad}
    return list(found.values())


def lain_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in lain_parameters(model))
