"""The YAML keys a model class accepts: the keyword parameters of its constructors (and of their bases)."""
from __future__ import annotations

import inspect
from typing import Dict

from .base import SequenceCTRModel

NOT_CONFIG = ("self", "feature_map", "trainer_options", "kwargs", "lain")


def model_keys(model_class: type) -> Dict[str, inspect.Parameter]:
    """``{key: parameter}`` of every constructor keyword of ``model_class`` and its model bases, plus the
    ``extra_config_keys`` a class declares (a LAIN variant's switches); the most derived class wins."""
    keys: Dict[str, inspect.Parameter] = {}
    for klass in reversed(model_class.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, SequenceCTRModel)):
            continue
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name not in NOT_CONFIG and parameter.kind is not inspect.Parameter.VAR_KEYWORD:
                keys[name] = parameter
        for name in getattr(klass, "extra_config_keys", ()):
            keys.setdefault(name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY))
    return keys
