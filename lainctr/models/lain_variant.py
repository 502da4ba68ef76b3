"""``<Backbone>_LAIN``: a backbone class whose constructor also takes LAIN's YAML keys."""
from __future__ import annotations

from ..layers.lain import LAINConfig
from .base import SequenceCTRModel


def lain_variant(backbone: type, name: str) -> type:
    """Build the LAIN variant of ``backbone``.

    The variant accepts every key of the backbone plus the :class:`LAINConfig` keys (``use_sle``,
    ``use_prompts``, ``num_prompts``, ...); with every LAIN switch off it builds exactly the backbone. LAIN
    conditions every branch the backbone declares as accepting it.
    """
    if not issubclass(backbone, SequenceCTRModel):
        raise TypeError(f"{backbone.__name__} is not a SequenceCTRModel")

    def __init__(self, feature_map, model_id: str = name, **kwargs):
        lain_keys = {k: kwargs.pop(k) for k in LAINConfig.keys() if k in kwargs}
        backbone.__init__(self, feature_map, model_id=model_id, lain=LAINConfig(**lain_keys), **kwargs)

    return type(name, (backbone,), {"__init__": __init__, "extra_config_keys": LAINConfig.keys(),
                                    "__doc__": f"{backbone.__name__} with LAIN (SLE, prompts, LMA)."})
