"""Where the zoo (model_zoo/, config/) and the data live."""
from __future__ import annotations

import os
from typing import Iterable, List, Optional

DATA_ROOT_ENV = "LAINCTR_DATA_ROOT"
ZOO_ROOT_ENV = "LAINCTR_ZOO_ROOT"
MODEL_DIRS_ENV = "LAINCTR_MODEL_DIRS"


def zoo_root() -> str:
    """The repository holding ``model_zoo/`` and ``config/``: $LAINCTR_ZOO_ROOT, else the checkout that
    contains this package (editable install), else the working directory."""
    if os.environ.get(ZOO_ROOT_ENV):
        return os.path.abspath(os.environ[ZOO_ROOT_ENV])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (here, os.getcwd()):
        if os.path.isdir(os.path.join(candidate, "model_zoo")):
            return candidate
    raise FileNotFoundError(f"cannot find the zoo (a folder with model_zoo/); set ${ZOO_ROOT_ENV}")


def zoo_path(path: str) -> str:
    """``path`` as given when absolute, else relative to the zoo (configs name ``./results/...`` and the like)."""
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(zoo_root(), path))


def zoo_relative(path: str) -> str:
    """``path`` relative to the zoo when it lies inside it, else as given: how reports name files, so that a
    committed report does not name the folders of the machine that wrote it."""
    relative = os.path.relpath(os.path.abspath(path), zoo_root())
    return path if relative.startswith(os.pardir) else relative


def data_root(override: Optional[str] = None) -> str:
    """Root of all dataset folders: ``--data_root``, else $LAINCTR_DATA_ROOT, else ``<zoo>/data``."""
    return os.path.abspath(override or os.environ.get(DATA_ROOT_ENV) or os.path.join(zoo_root(), "data"))


def model_dirs() -> List[str]:
    """Folders holding model folders (``<Model>/<Model>.py`` and ``<Model>/config/*.yaml``): the zoo's
    ``model_zoo/``, then every folder in $LAINCTR_MODEL_DIRS (separated by ``os.pathsep``), in that order."""
    extra = [d for d in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if d]
    return [os.path.join(zoo_root(), "model_zoo")] + [os.path.abspath(d) for d in extra]


def find_file(path: str, search_dirs: Iterable[str] = ()) -> Optional[str]:
    """An existing file a results row names: ``path`` itself when absolute, else the first of
    ``<search dir>/path`` and ``path`` that exists; None if none does."""
    if not path:
        return None
    candidates = [path] if os.path.isabs(path) else [os.path.join(d, path) for d in search_dirs] + [path]
    return next((c for c in candidates if os.path.exists(c)), None)
