"""``<Backbone>_LAIN``: a backbone class whose constructor also takes LAIN's YAML keys."""
from __future__ import annotations

from ..lain_presets import DEFAULT_PRESET
from ..layers.lain import LAINConfig, lain_config
from .base import SequenceCTRModel


def lain_variant(backbone: type, name: str) -> type:
    """Build the LAIN variant of ``backbone``.

    The variant accepts every key of the backbone plus the :class:`LAINConfig` keys (``use_sle``,
    ``use_prompts``, ``num_prompts``, ...) and ``lain_preset`` (``lean`` | ``paper``: the sizes it starts
    from, keys given explicitly win); with every LAIN switch off it builds exactly the backbone. LAIN
    conditions every branch the backbone declares as accepting it.
    """
    if not issubclass(backbone, SequenceCTRModel):
        raise TypeError(f"{backbone.__name__} is not a SequenceCTRModel")

    def __init__(self, feature_map, model_id: str = name, lain_preset: str = DEFAULT_PRESET, **kwargs):
        lain_keys = {k: kwargs.pop(k) for k in LAINConfig.keys() if k in kwargs}
        backbone.__init__(self, feature_map, model_id=model_id, lain=lain_config(lain_preset, **lain_keys), **kwargs)

    return type(name, (backbone,), {"__init__": __init__, "extra_config_keys": LAINConfig.keys(),
                                    "__doc__": f"{backbone.__name__} with LAIN (SLE, prompts, LMA)."})
