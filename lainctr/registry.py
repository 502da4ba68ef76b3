"""Model registry: ``<Model>/<Model>.py`` files in the zoo's ``model_zoo/`` and in the folders of
$LAINCTR_MODEL_DIRS (``lainctr.paths.model_dirs``), loaded by path.

The zoo folder is not a Python package on purpose: the fuxictr wheels install a top-level ``model_zoo``
package (upstream LongCTR code) that an importable ``model_zoo`` of ours would shadow or collide with.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Dict, List

from .paths import model_dirs

_MODULE_PREFIX = "lainctr_zoo_"


def model_folders() -> Dict[str, str]:
    """``{model name: its folder}``; a name in two model directories is an error (which one would win?)."""
    found: Dict[str, str] = {}
    for root in model_dirs():
        if not os.path.isdir(root):
            raise FileNotFoundError(f"model directory {root} does not exist (check $LAINCTR_MODEL_DIRS)")
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if os.path.exists(os.path.join(folder, f"{name}.py")):
                if name in found:
                    raise KeyError(f"model '{name}' is defined in both {found[name]} and {folder}")
                found[name] = folder
    return found


def available_models() -> List[str]:
    return sorted(model_folders())


def model_dir(name: str) -> str:
    folders = model_folders()
    if name not in folders:
        raise KeyError(f"unknown model '{name}'; available: {sorted(folders)} (model folders: {model_dirs()})")
    return folders[name]


def get_model(name: str) -> type:
    """The model class ``name`` from ``<model dir>/<name>/<name>.py``."""
    module_name = _MODULE_PREFIX + name
    if module_name not in sys.modules:
        path = os.path.join(model_dir(name), f"{name}.py")
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise KeyError(f"{path} cannot be loaded as a Python module")
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
