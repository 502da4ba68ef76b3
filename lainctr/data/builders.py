"""Datasets the zoo generates itself (the synthetic ones): the builder of each, and whether a folder already
there was generated with the settings its dataset config asks for (a folder of an older generator or of other
``builder_args`` is never used silently)."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable, Dict, List, NamedTuple

from . import store, synthetic, synthetic_scale


class Builder(NamedTuple):
    """``build(data_dir, dataset_id=..., **builder_args) -> data_dir`` writes the folder; ``settings(**builder_args)``
    is the generator config it records as ``generator`` in ``dataset_info.json``."""
    build: Callable[..., str]
    settings: Callable[..., Any]


BUILDERS: Dict[str, Builder] = {
    "synthetic": Builder(synthetic.build, synthetic.resolve_config),
    "synthetic_scale": Builder(synthetic_scale.build, synthetic_scale.resolve_config),
}
_ABSENT = "(absent)"


def setting_differences(data_dir: str, builder: str, builder_args: Dict[str, Any]) -> List[str]:
    """``'key: recorded -> asked'`` for every generator setting (nested keys dotted) in which the dataset folder
    differs from what ``builder`` makes of ``builder_args``; empty when they agree."""
    asked = _flatten(json.loads(json.dumps(asdict(BUILDERS[builder].settings(**builder_args)))))
    recorded = _flatten(store.read_info(data_dir).get("generator") or {})
    return [f"{key}: {json.dumps(recorded.get(key, _ABSENT))} -> {json.dumps(asked.get(key, _ABSENT))}"
            for key in sorted(set(asked) | set(recorded)) if recorded.get(key, _ABSENT) != asked.get(key, _ABSENT)]


def _flatten(settings: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
