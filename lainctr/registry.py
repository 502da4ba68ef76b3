"""Model registry: ``model_zoo/<Model>/<Model>.py`` files, loaded by path.

The zoo folder is not a Python package on purpose: the fuxictr wheels install a top-level ``model_zoo``
package (upstream LongCTR code) that an importable ``model_zoo`` of ours would shadow or collide with.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import List

from .paths import zoo_root

_MODULE_PREFIX = "lainctr_zoo_"


def model_dir(name: str) -> str:
    return os.path.join(zoo_root(), "model_zoo", name)


def available_models() -> List[str]:
    root = os.path.join(zoo_root(), "model_zoo")
    return sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, f"{d}.py")))


def get_model(name: str) -> type:
    """The model class ``name`` from ``model_zoo/<name>/<name>.py``."""
    module_name = _MODULE_PREFIX + name
    if module_name not in sys.modules:
        path = os.path.join(model_dir(name), f"{name}.py")
        if not os.path.exists(path):
            raise KeyError(f"unknown model '{name}': {path} not found; available: {available_models()}")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    module = sys.modules[module_name]
    if not hasattr(module, name):
        raise KeyError(f"{module.__file__} defines no class '{name}'")
    return getattr(module, name)
